"""Issue #11 item 2 / #16: `publish` (and legacy `deliver`) stages act in a real run.

A run whose recipe has a publish stage publishes its sealed artifact when it completes, to
the stage's target (or the run's publishTarget when the stage names none, as a migrated
`deliver` does), through forge/publish's path: `Published` / `PublishFailed` on the run. A
failed publication leaves the artifact sealed and the run completed, and says so.
Fake executors (tests/conftest.py forge_env), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import count_run_events, ok, read, run_events

A = "forge_artifacts"
R = "forge_recipes"

pytestmark = pytest.mark.usefixtures("forge_env")


def with_stage(recipe: dict[str, Any], **stage: Any) -> dict[str, Any]:
    data = copy.deepcopy(recipe)
    data["stages"].append({"type": "publish", **stage})
    return data


def forge(foundry: Any, data: dict[str, Any], **params: Any) -> dict[str, Any]:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    return foundry.execute("forge/run", {"recipeId": recipe_id, **params})


def event_names(foundry: Any, run_id: str) -> list[str]:
    return [type(e).__name__ for e in run_events(foundry, run_id)]


def test_a_publish_stage_publishes_the_sealed_artifact_to_its_target(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "published"
    run = ok(forge(foundry, with_stage(recipe, target=out.as_uri())))
    assert run["status"] == "completed", run
    [stage] = run["publishStages"]
    assert stage == {"index": len(recipe["stages"]), "target": out.as_uri(),
                     "status": "published", "url": out.resolve().as_uri()}
    assert event_names(foundry, run["runId"])[-1] == "Published"
    artifact = read(foundry, A, run["artifactId"])
    assert artifact["receipt"]["publications"][0]["target"] == out.as_uri()
    assert [p.name for p in out.glob("*.alloy.json")] == [
        f"{artifact['recipeName']}.alloy.json"]
    assert (out / "README.md").is_file()
    # The publish stage is not an executor stage: nothing of it is in the sealed stages.
    assert [s["type"] for s in artifact["provenance"]["stages"]] == [
        s["type"] for s in recipe["stages"]]
    # forge/status says it too, and asking again publishes nothing twice.
    status = ok(foundry.execute("forge/status", {"runId": run["runId"]}))
    assert status["publishStages"] == run["publishStages"]


def test_a_migrated_deliver_stage_publishes_to_the_runs_publish_target(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "delivered"
    # What import makes of a legacy `deliver` stage: a publish stage naming no target.
    data = with_stage(recipe, **{"legacyType": "deliver"})
    run = ok(forge(foundry, data, publishTarget=out.as_uri()))
    assert run["publishStages"][0]["status"] == "published", run
    assert "publishError" not in run
    assert event_names(foundry, run["runId"]).count("Published") == 1  # not once more
    assert list(out.glob("*.alloy.json"))


def test_a_publish_stage_with_nowhere_to_publish_is_refused_before_a_run_starts(
        foundry: Any, recipe: dict[str, Any]) -> None:
    before = count_run_events(foundry)
    result = forge(foundry, with_stage(recipe))
    assert result["success"] is False and result["errorCode"] == "invalid_input", result
    assert f"stages.{len(recipe['stages'])}" in result["error"]
    assert "publishTarget" in result["error"]
    assert count_run_events(foundry) == before


def test_a_failed_publication_leaves_the_run_sealed_and_says_why(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "never"
    data = with_stage(recipe, target=out.as_uri())
    # A baseline no model beats: the gate fails, and an ungated artifact is not published.
    data["priorMetricBaselines"] = [{
        "metric": "perplexity", "value": 0.001, "source": "an impossible run",
        "measuredAt": "2026-01-01T00:00:00+00:00", "measurementMethod": "fake eval"}]
    run = ok(forge(foundry, data))
    assert run["status"] == "completed" and run["alloyHash"], run
    [stage] = run["publishStages"]
    assert stage["status"] == "failed" and "gate" in stage["error"], stage
    assert "sealed" in stage["note"]
    names = event_names(foundry, run["runId"])
    assert "Sealed" in names and names[-1] == "PublishFailed" and "Published" not in names
    assert not out.exists()
    # Still the sealed artifact, unchanged by the failure; a forced forge/publish retries.
    assert read(foundry, A, run["artifactId"])["alloyHash"] == run["alloyHash"]
    ok(foundry.execute("forge/publish", {"id": run["runId"], "target": out.as_uri(),
                                         "force": True, "reason": "the baseline is a test"}))
    status = ok(foundry.execute("forge/status", {"runId": run["runId"]}))
    assert status["publishStages"][0]["status"] == "published"
