"""Issue #16 item 3's last clause: `hardwareVerified` lists only devices the run used.

A stage ran on the device of the attempt that ran it (recorded by the orchestrator in
`Started`) and on that worker's CPU. A stage that claims it verified a tier on another
device does not get that claim into the artifact: it is dropped, listed in the provenance,
and nothing is invented in its place. Fake executors, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.fake import FakeExecutor, build_fake_registry
from tests.conftest import ok, read

A = "forge_artifacts"
R = "forge_recipes"

pytestmark = pytest.mark.usefixtures("forge_env")


class ClaimsForeignDevices:
    """The fake quant stage, plus claims of having verified its tiers on an Apple GPU and a
    CUDA device this CPU-only run never touched."""

    stage_type = "quant"

    def __init__(self) -> None:
        self.inner = FakeExecutor("quant")

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        result = self.inner.run(ctx, reporter)
        honest = list(result.metrics["hardwareVerified"])
        foreign = [{**honest[0], "device": "mps"}, {**honest[0], "device": "cuda:0"}]
        metrics = {**result.metrics, "hardwareVerified": [*honest, *foreign]}
        return StageResult(output_dir=result.output_dir, files=result.files, metrics=metrics,
                           notes=result.notes)


def test_a_claim_for_a_device_the_run_did_not_use_is_dropped_not_listed(
        foundry: Any, recipe: dict[str, Any]) -> None:
    registry = build_fake_registry()
    registry.register(ClaimsForeignDevices(), replace=True)
    foundry.use_registry(registry)
    data = copy.deepcopy(recipe)
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert run["status"] == "completed", run
    artifact = read(foundry, A, run["artifactId"])
    [attempt] = artifact["provenance"]["attempts"]
    assert attempt["device"] == "cpu"
    # Only the tiers verified on this worker's device, one per quant type.
    assert {hv["device"] for hv in artifact["hardwareVerified"]} == {"cpu"}
    assert sorted(hv["format"] for hv in artifact["hardwareVerified"]) == [
        "gguf-Q4_K_M", "gguf-Q8_0"]
    dropped = artifact["provenance"]["hardwareClaimsDropped"]
    assert [d["device"] for d in dropped] == ["mps", "cuda:0"]
    assert all("ran on cpu" in d["why"] for d in dropped)
    # The stage's own record keeps what it reported: the filter is the artifact's rule.
    quant = next(s for s in artifact["provenance"]["stages"] if s["type"] == "quant")
    assert len(quant["metrics"]["hardwareVerified"]) == 4
    replay = ok(foundry.execute("audit/replay", {"runId": run["runId"]}))
    assert replay["ok"], replay["problems"]


def test_an_honest_run_lists_every_verified_tier_and_drops_nothing(
        foundry: Any, recipe: dict[str, Any]) -> None:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    artifact = read(foundry, A, run["artifactId"])
    assert len(artifact["hardwareVerified"]) == 2
    assert "hardwareClaimsDropped" not in artifact["provenance"]
