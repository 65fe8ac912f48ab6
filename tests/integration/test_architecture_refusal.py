"""forge/run refuses up front what the real executors cannot forge: an architecture no family
module describes (naming it and the supported list), and the stage types refused by design
(modality, deploy) with their reasons. Nothing is recorded for a refused run.

The registry is the fake executors' with the real registry's architecture check and refusals,
so the test runs the real forge/run path without training a model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from foundry.executors.fake import FakeExecutor, build_fake_registry
from foundry.executors.real import REFUSED_STAGES, architecture_problem
from foundry.executors.registry import ExecutorRegistry
from tests.conftest import count_run_events, ok

SUPPORTED = "supported: gemma3, llama, qwen3, qwen3_5, qwen3_5_moe, qwen3_moe"


def _checked_registry() -> ExecutorRegistry:
    registry = build_fake_registry()
    registry.architecture_check = architecture_problem
    registry.refused = dict(REFUSED_STAGES)
    return registry


def _run(foundry: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    created = ok(foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe}))
    result: dict[str, Any] = foundry.execute("forge/run", {"recipeId": created["id"]})
    return result


def test_an_unknown_architecture_is_refused_naming_the_supported_ones(
    foundry: Any, forge_env: Path, recipe_data: dict[str, Any]
) -> None:
    foundry.use_registry(_checked_registry())
    recipe = copy.deepcopy(recipe_data)
    recipe["source"]["architecture"] = "qwen3_vl"
    result = _run(foundry, recipe)
    assert not result["success"] and result["errorCode"] == "invalid_input", result
    assert "source.architecture" in result["error"] and "'qwen3_vl'" in result["error"]
    assert SUPPORTED in result["error"]
    assert count_run_events(foundry) == 0


def test_a_known_architecture_by_class_name_runs(
    foundry: Any, forge_env: Path, recipe_data: dict[str, Any]
) -> None:
    foundry.use_registry(_checked_registry())
    recipe = copy.deepcopy(recipe_data)
    recipe["source"] = {"baseModel": "fake://tiny", "architecture": "Qwen3_5ForCausalLM"}
    recipe["calibrationCorpus"] = {"name": "stdlib-sample",
                                   "contentHash": "sha256:" + "ab" * 32, "sizeBytes": 1234}
    result = ok(_run(foundry, recipe))
    assert result["status"] == "completed", result


def test_modality_and_deploy_are_refused_with_their_reasons(
    foundry: Any, forge_env: Path, recipe_data: dict[str, Any]
) -> None:
    registry = ExecutorRegistry(
        [FakeExecutor(t) for t in ("prune", "train", "lora", "quant", "eval")],
        known_benchmarks=build_fake_registry().known_benchmarks,
        source_resolver=build_fake_registry().source_resolver,
        architecture_check=architecture_problem, refused=REFUSED_STAGES,
    )
    foundry.use_registry(registry)
    recipe = copy.deepcopy(recipe_data)
    recipe["stages"] = [
        {"type": "modality", "modality": "vision", "encoderModel": "google/siglip-base"},
        *recipe["stages"],
        {"type": "deploy", "target": "local"},
    ]
    result = _run(foundry, recipe)
    assert not result["success"] and result["errorCode"] == "invalid_input", result
    error = result["error"]
    assert f"deploy ({REFUSED_STAGES['deploy']})" in error
    assert f"modality ({REFUSED_STAGES['modality']})" in error
    assert count_run_events(foundry) == 0


def test_a_data_file_benchmark_without_a_data_file_is_refused_naming_the_field(
    foundry: Any, forge_env: Path, recipe_data: dict[str, Any]
) -> None:
    registry = _checked_registry()
    registry.data_file_benchmarks = frozenset({"mmlu", "gsm8k"})
    foundry.use_registry(registry)
    recipe = copy.deepcopy(recipe_data)
    recipe["evaluationBenchmarks"] = [{"name": "mmlu", "nShot": 5}]
    result = _run(foundry, recipe)
    assert not result["success"] and result["errorCode"] == "invalid_input", result
    assert "benchmarks" in result["error"]
    assert "mmlu: no data set for it is installed here; give the entry a dataFile" in (
        result["error"])
    recipe["evaluationBenchmarks"] = [{"name": "hellaswag"}]
    recipe["name"] += " (2)"
    result = _run(foundry, recipe)
    assert "unknown benchmark(s) hellaswag" in result["error"]
    assert "with a local dataFile: gsm8k, mmlu" in result["error"]
    assert count_run_events(foundry) == 0
