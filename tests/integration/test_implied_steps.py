"""Issue #16 item 4: recipe-level evaluationBenchmarks and quantTiers act in a run.

A recipe whose evaluationBenchmarks no eval stage runs gets an implied eval step at the end
of its last cycle; one with quantTiers and no quant stage gets an implied quant step. Both are
recorded like any stage (with `impliedBy`), are in the artifact's provenance and alloyHash,
and replay. What cannot run here is refused up front, by name, before anything is recorded.
Fake executors (tests/conftest.py forge_env), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.runs.orchestrator import plan
from tests.conftest import count_run_events, ok, read

A = "forge_artifacts"
R = "forge_recipes"

pytestmark = pytest.mark.usefixtures("forge_env")


@pytest.fixture
def bare(recipe: dict[str, Any]) -> dict[str, Any]:
    """The example recipe without its quant and eval stages."""
    data = copy.deepcopy(recipe)
    data["stages"] = [s for s in data["stages"] if s["type"] not in ("quant", "eval")]
    data["quantTiers"], data["evaluationBenchmarks"] = [], []
    return data


def forge(foundry: Any, data: dict[str, Any], **params: Any) -> dict[str, Any]:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    return foundry.execute("forge/run", {"recipeId": recipe_id, **params})


def provenance_stages(foundry: Any, run: dict[str, Any]) -> list[dict[str, Any]]:
    return list(read(foundry, A, run["artifactId"])["provenance"]["stages"])


def test_evaluation_benchmarks_without_an_eval_stage_run_as_an_implied_last_step(
        foundry: Any, bare: dict[str, Any]) -> None:
    bare["cycles"] = 2
    bare["evaluationBenchmarks"] = [{"name": "fake-code", "nShot": 0}]
    run = ok(forge(foundry, bare))
    assert run["status"] == "completed", run
    stages = provenance_stages(foundry, run)
    # Transform stages in both cycles, then the implied eval, numbered after the last stage.
    assert [(s["cycle"], s["index"], s["type"]) for s in stages] == [
        (1, 0, "prune"), (1, 1, "train"), (1, 2, "lora"),
        (2, 0, "prune"), (2, 1, "train"), (2, 2, "lora"), (2, 3, "eval")]
    artifact = read(foundry, A, run["artifactId"])
    assert stages[-1]["config"] == {"type": "eval", "impliedBy": "evaluationBenchmarks",
                                    "benchmarks": artifact["evaluationBenchmarks"]}
    assert [b["name"] for b in artifact["evaluationBenchmarks"]] == ["fake-code"]
    names = [b["name"] for b in artifact["results"]["benchmarks"]]
    assert "fake-code" in names and len(names) == len(set(names)), names
    # Part of what was sealed: the replay of the events gives the same artifact and hash.
    replay = ok(foundry.execute("audit/replay", {"runId": run["runId"]}))
    assert replay["ok"], replay["problems"]
    assert replay["replayedAlloyHash"] == artifact["alloyHash"]


def test_an_implied_eval_runs_only_what_no_eval_stage_of_the_recipe_runs(
        foundry: Any, recipe: dict[str, Any]) -> None:
    data = copy.deepcopy(recipe)  # its eval stage runs perplexity
    data["evaluationBenchmarks"] = [{"name": "perplexity"}, {"name": "fake-code"}]
    run = ok(forge(foundry, data))
    implied = [s for s in provenance_stages(foundry, run) if s["config"].get("impliedBy")]
    assert [[b["name"] for b in s["config"]["benchmarks"]] for s in implied] == [["fake-code"]]
    results = read(foundry, A, run["artifactId"])["results"]["benchmarks"]
    assert sorted(b["name"] for b in results) == ["fake-code", "perplexity"]  # each once


def test_a_recipe_whose_eval_stage_runs_its_benchmarks_implies_no_step(
        recipe: dict[str, Any]) -> None:
    data = copy.deepcopy(recipe)  # eval(perplexity) + evaluationBenchmarks [perplexity]
    assert [step for _c, _i, step in plan(data) if step.get("impliedBy")] == []
    assert [s["type"] for _c, _i, s in plan(data)] == [s["type"] for s in data["stages"]]


def test_an_evaluation_benchmark_no_executor_runs_is_refused_before_a_run_starts(
        foundry: Any, bare: dict[str, Any]) -> None:
    bare["evaluationBenchmarks"] = [{"name": "fake-code"}, {"name": "no-such-bench"}]
    before = count_run_events(foundry)
    result = forge(foundry, bare)
    assert not result["success"]
    assert result["errorCode"] == "invalid_input"
    assert "no-such-bench" in result["error"], result
    assert count_run_events(foundry) == before  # nothing recorded


def test_quant_tiers_without_a_quant_stage_yield_every_variant_of_every_tier(
        foundry: Any, bare: dict[str, Any]) -> None:
    bare["quantTiers"] = [{"format": "gguf", "variants": ["Q8_0", "q4_k_m"]},
                          {"format": "gguf", "variants": ["Q5_K_M", "Q8_0"]}]
    run = ok(forge(foundry, bare))
    assert run["status"] == "completed", run
    [quant] = [s for s in provenance_stages(foundry, run) if s["type"] == "quant"]
    assert quant["index"] == len(bare["stages"])
    assert quant["config"] == {"type": "quant", "format": "gguf", "impliedBy": "quantTiers",
                               "quantTypes": ["Q8_0", "q4_k_m", "Q5_K_M"]}
    ggufs = sorted(f["path"] for f in quant["files"] if f["role"] == "output")
    assert ggufs == ["model-Q4_K_M.gguf", "model-Q5_K_M.gguf", "model-Q8_0.gguf"]
    assert sorted(quant["metrics"]["tensorTypes"]) == ["Q4_K_M", "Q5_K_M", "Q8_0"]
    artifact = read(foundry, A, run["artifactId"])
    assert sorted(hv["format"] for hv in artifact["hardwareVerified"]) == [
        "gguf-Q4_K_M", "gguf-Q5_K_M", "gguf-Q8_0"]
    assert artifact["results"]["finalSizeGb"] > 0


def test_the_fake_quant_stage_honours_quant_tiers_like_the_real_one(
        foundry: Any, recipe: dict[str, Any]) -> None:
    data = copy.deepcopy(recipe)  # an explicit quant stage of Q8_0 and Q4_K_M
    data["quantTiers"] = [{"format": "gguf", "variants": ["Q6_K"]}]
    run = ok(forge(foundry, data))
    [quant] = [s for s in provenance_stages(foundry, run) if s["type"] == "quant"]
    assert "impliedBy" not in quant["config"]  # the recipe's own quant stage, no second one
    assert sorted(f["path"] for f in quant["files"] if f["role"] == "output") == [
        "model-Q4_K_M.gguf", "model-Q6_K.gguf", "model-Q8_0.gguf"]
    for entry in quant["metrics"]["hardwareVerified"]:
        assert entry["tensorTypes"] == quant["metrics"]["tensorTypes"][
            entry["format"].removeprefix("gguf-")]


@pytest.mark.parametrize(("tier", "named"), [
    ({"format": "mlx", "variants": ["4bit"]}, "mlx"),
    ({"format": "gguf", "variants": ["Q8_0", "Q9_ZZ"]}, "Q9_ZZ"),
])
def test_a_quant_tier_this_machine_cannot_produce_is_refused_up_front_by_name(
        foundry: Any, bare: dict[str, Any], tier: dict[str, Any], named: str) -> None:
    bare["quantTiers"] = [{"format": "gguf", "variants": ["Q8_0"]}, tier]
    before = count_run_events(foundry)
    result = forge(foundry, bare)
    assert not result["success"]
    assert result["errorCode"] == "invalid_input"
    assert "quantTiers" in result["error"] and named in result["error"], result
    assert count_run_events(foundry) == before


def test_implied_steps_are_planned_alike_for_every_run_of_a_recipe(
        foundry: Any, bare: dict[str, Any], tmp_path: Path) -> None:
    bare["quantTiers"] = [{"format": "gguf", "variants": ["Q8_0"]}]
    bare["evaluationBenchmarks"] = [{"name": "fake-code"}]
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": bare}))["id"]
    runs = [ok(foundry.execute("forge/run", {"recipeId": recipe_id, "reuse": False}))
            for _ in range(2)]
    configs = [[(s["index"], s["config"]) for s in provenance_stages(foundry, r)] for r in runs]
    assert configs[0] == configs[1]
    assert [c["impliedBy"] for _i, c in configs[0] if "impliedBy" in c] == [
        "quantTiers", "evaluationBenchmarks"]
    # The same inputs and the same plan: the fake executors' outputs are equal too.
    outputs = [[s["outputHash"] for s in provenance_stages(foundry, r)] for r in runs]
    assert outputs[0] == outputs[1]


def test_a_gguf_tier_no_quant_step_writes_before_the_eval_is_refused_up_front(
        foundry: Any, forge_env: Path, recipe_data: dict[str, Any]) -> None:
    """humaneval's `gguf` scores a tier of this run: forge/run refuses, before anything is
    recorded, a tier that no quant step before the eval writes (it would fail there)."""
    from foundry.adapters.commands.forge import _check_gguf_tiers
    from foundry.executors.fake import build_fake_registry

    registry = build_fake_registry()
    registry.known_benchmarks = registry.known_benchmarks | {"humaneval"}
    foundry.use_registry(registry)
    recipe = copy.deepcopy(recipe_data)
    recipe["quantTiers"] = []
    quant = next(s for s in recipe["stages"] if s["type"] == "quant")
    quant["quantTypes"] = ["Q8_0"]
    evaluation = next(s for s in recipe["stages"] if s["type"] == "eval")
    evaluation["benchmarks"] = [{"name": "fake-code", "gguf": "q8_0"}]

    def run(name: str) -> dict[str, Any]:
        created = ok(foundry.execute("data/create", {"collection": "forge_recipes",
                                                     "data": {**recipe, "name": name}}))
        result: dict[str, Any] = foundry.execute("forge/run", {"recipeId": created["id"]})
        return result

    refused = run("not humaneval")
    assert "fake-code gguf: only humaneval scores a GGUF tier" in refused["error"], refused
    evaluation["benchmarks"] = [{"name": "humaneval", "gguf": "Q4_K_M"}]
    refused = run("tier not written")
    assert not refused["success"] and refused["errorCode"] == "invalid_input"
    index = recipe["stages"].index(evaluation)
    assert (f"stages[{index}]: humaneval gguf 'Q4_K_M': no quant step before this eval writes "
            f"that tier (tiers written before it: Q8_0)") in refused["error"], refused
    evaluation["benchmarks"] = [{"name": "humaneval", "gguf": "q8_0"}]
    assert _check_gguf_tiers(recipe, registry) is None  # written before it: accepted
    recipe["quantTiers"] = [{"format": "gguf", "variants": ["Q4_K_M"]}]
    evaluation["benchmarks"] = [{"name": "humaneval", "gguf": "Q4_K_M"}]
    assert _check_gguf_tiers(recipe, registry) is None  # quantTiers add to the quant stage's
    recipe["quantTiers"] = []
    recipe["stages"].remove(evaluation)  # the eval before the quant: nothing written yet
    recipe["stages"].insert(recipe["stages"].index(quant), evaluation)
    evaluation["benchmarks"] = [{"name": "humaneval", "gguf": "Q8_0"}]
    refused = run("eval before quant")
    assert "(tiers written before it: none)" in refused["error"], refused
    assert count_run_events(foundry) == 0
