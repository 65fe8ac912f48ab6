"""forge/run with rehearsal: true, on the fake executors: what the rehearsal records, and the
never-publishable rule. The scale model is real (built from LlamaConfig's defaults, on
SmolLM2's tokenizer as a recorded stand-in); the fake executors only stand in for the stages,
so these run in seconds. The real stages on a real scale model: test_rehearsal_e2e.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from foundry.executors.fake import build_fake_registry, resolve_fake_source
from foundry.executors.real import REFUSED_STAGES, architecture_problem
from foundry.executors.registry import ExecutorRegistry
from tests.conftest import ok


def _registry() -> ExecutorRegistry:
    registry = build_fake_registry()
    registry.architecture_check = architecture_problem
    registry.refused = dict(REFUSED_STAGES)
    registry.source_resolver = _scale_source
    return registry


def _scale_source(source: Any) -> Path:
    """The source must be the scale model built for the rehearsal; the fake executors then
    work on a fake model (they would garble real safetensors)."""
    assert (Path(source["baseModel"]) / "config.json").is_file(), source
    assert (Path(source["baseModel"]) / "tokenizer.json").is_file(), source
    return resolve_fake_source({"baseModel": "fake://scale-model"})


def _recipe(recipe_data: dict[str, Any]) -> dict[str, Any]:
    recipe = copy.deepcopy(recipe_data)
    recipe["source"] = {"baseModel": "meta-llama/Llama-2-7b-hf", "architecture": "llama"}
    recipe["stages"] = [
        {"type": "prune", "strategy": "activation-magnitude", "level": 0.25},
        {"type": "modality", "modality": "vision", "encoder_model": "google/siglip"},
        {"type": "train", "steps": 500, "batchSize": 8, "sequenceLength": 4096,
         "dataset": "m-a-p/CodeFeedback-Filtered-Instruction"},
        {"type": "quant", "format": "gguf", "quantTypes": ["Q8_0", "Q4_K_M"]},
        {"type": "eval", "benchmarks": [{"name": "perplexity"}, {"name": "humaneval"}]},
        {"type": "deploy", "target": "https://serving.example"},
        {"type": "publish", "org": "someone"},
    ]
    recipe["cycles"] = 5
    recipe["hardware"] = {"minVramGb": 24, "recommendedVramGb": 32}
    recipe.pop("evaluationBenchmarks", None)
    recipe.pop("calibrationCorpus", None)
    return recipe


def test_a_rehearsal_records_what_it_changed_and_can_never_be_published(
    foundry: Any, forge_env: Path, recipe_data: dict[str, Any], tmp_path: Path
) -> None:
    foundry.use_registry(_registry())
    recipe = _recipe(recipe_data)
    created = ok(foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe}))

    # A real run still refuses the stage types the rehearsal passes over, up front.
    real = foundry.execute("forge/run", {"recipeId": created["id"]})
    assert not real["success"] and "modality" in real["error"], real

    run = ok(foundry.execute("forge/run", {"recipeId": created["id"], "rehearsal": True,
                                           "hardwareNode": "rtx-4090@lab"}))
    assert run["status"] == "completed" and run["rehearsal"]
    assert run["hardwareNode"] == "any"  # runs anywhere; rtx-4090 is what it projects onto
    assert [s["type"] for s in run["stages"] if s["cycle"] == 3] == [
        "prune", "train", "quant", "eval"]
    assert max(s["cycle"] for s in run["stages"]) == 3  # cycles capped, recorded below
    reh = run["rehearsal"]
    assert reh["publishable"] is False
    assert {(p["type"], p["index"]) for p in reh["passedOver"]} == {
        ("modality", 1), ("deploy", 5), ("publish", 6)}
    reasons = {p["type"]: p["reason"] for p in reh["passedOver"]}
    assert reasons["modality"].startswith("modality (grafting a vision")
    assert "never published" in reasons["publish"]
    caps = {(c.get("type"), c["field"]): (c["from"], c["to"]) for c in reh["stepCaps"]}
    assert caps[("train", "steps")] == (500, 2)
    assert caps[("train", "sequenceLength")] == (4096, 128)
    assert caps[("prune", "analysisSteps")] == (200, 2)  # absent: the executor's default
    assert caps[(None, "cycles")] == (5, 3)
    kinds = {s["kind"]: s for s in reh["standIns"]}
    assert kinds["calibrationCorpus"]["why"] == "none named"
    assert kinds["datasets"]["replaced"] == ["m-a-p/CodeFeedback-Filtered-Instruction"]
    assert kinds["benchmarks"]["replaced"] == ["humaneval"]
    scale = reh["scaleModel"]
    assert scale["architecture"] == ["LlamaForCausalLM"]
    assert scale["tokenizer"]["real"] is False and "stands in" in scale["tokenizer"]["why"]
    assert scale["baseConfigFrom"] == "LlamaConfig defaults (no config.json found)"
    assert scale["kept"]["num_attention_heads"] == 32

    proj = reh["projection"]
    # LlamaConfig's defaults are Llama-2-7B's shape: 6.74B parameters.
    assert proj["parameters"]["count"] == 6_738_415_616
    assert "meta device" in proj["parameters"]["method"]
    assert proj["diskGb"]["Q4_K_M"]["gb"] == pytest.approx(6_738_415_616 * 4.85 / 8 / 2**30,
                                                          abs=0.01)
    assert set(proj["diskGb"]) == {"Q4_K_M", "Q8_0", "F16"}
    rows = {r["type"]: r for r in proj["memory"]["stages"]}
    assert rows["train"]["fitsMinVram"] is False and "AdamW" in rows["train"]["method"]
    assert rows["eval"]["fitsNode"] is True  # 13.5 GB of bf16 weights on a 24 GB card
    assert proj["memory"]["node"] == {"hardwareNode": "rtx-4090@lab", "class": "rtx-4090",
                                      "vramGb": 24, "method": "known VRAM of the node class"}
    assert proj["warnings"] == []  # 7b named, 6.74B counted

    artifact = ok(foundry.execute("data/read", {"collection": "forge_artifacts",
                                                "id": run["artifactId"]}))["data"]
    assert artifact["rehearsal"] == reh
    assert ok(foundry.execute("audit/replay", {"runId": run["runId"]}))["ok"]
    assert ok(foundry.execute("lineage/report", {"id": run["artifactId"]}))["runs"]

    # The rule: never published, even forced with a reason, and nothing is recorded.
    target = (tmp_path / "published").as_uri()
    for params in ({}, {"force": True, "reason": "I know what I am doing"}):
        refused = foundry.execute("forge/publish", {"id": run["artifactId"], "target": target,
                                                    **params})
        assert not refused["success"], refused
        assert "scale-model rehearsal" in refused["error"], refused
        assert "rehearsal artifacts are unpublishable" in refused["error"], refused
    assert not (tmp_path / "published").exists()
    status = ok(foundry.execute("forge/status", {"runId": run["runId"]}))
    assert status["rehearsal"] is True

    # Asking for a publish target with a rehearsal is refused before anything runs.
    refused = foundry.execute("forge/run", {"recipeId": created["id"], "rehearsal": True,
                                            "publishTarget": target})
    assert not refused["success"] and "publishTarget" in refused["error"], refused


def test_a_rehearsal_of_an_unknown_architecture_is_refused(
    foundry: Any, forge_env: Path, recipe_data: dict[str, Any]
) -> None:
    foundry.use_registry(_registry())
    recipe = _recipe(recipe_data)
    recipe["source"] = {"baseModel": "x/y", "architecture": "qwen3_vl"}
    created = ok(foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe}))
    refused = foundry.execute("forge/run", {"recipeId": created["id"], "rehearsal": True})
    assert not refused["success"] and refused["errorCode"] == "invalid_input", refused
    assert "source.architecture" in refused["error"] and "qwen3_vl" in refused["error"]
