"""Issue #16 items 5, 6, 7 through the commands, on SQLite and PostgreSQL: a gate that cannot
be dodged, Continuum's data/* semantics, artifact completeness."""

from __future__ import annotations

import copy
from typing import Any

from tests.conftest import ROOT, ok

R = "forge_recipes"
A = "forge_artifacts"
FIXTURES = ROOT / "tests" / "fixtures" / "alloys"


def create(foundry: Any, data: dict[str, Any]) -> str:
    return str(ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"])


# --- item 5: the gate ------------------------------------------------------------------------

def test_a_baseline_with_only_a_metric_is_refused_when_written(foundry, recipe_data):
    data = copy.deepcopy(recipe_data)
    data["priorMetricBaselines"] = [{"metric": "perplexity"}]
    refused = foundry.execute("data/create", {"collection": R, "data": data})
    assert not refused["success"] and refused["errorCode"] == "invalid_input", refused
    assert refused["errors"][0]["field"].startswith("data.priorMetricBaselines.0")
    for name in ("value", "source", "measuredAt", "measurementMethod"):
        assert name in refused["error"], refused
    # Nor can an update slip it in.
    recipe_id = create(foundry, copy.deepcopy(recipe_data))
    update = foundry.execute("data/update", {"collection": R, "id": recipe_id, "data": {
        "priorMetricBaselines": [{"metric": "perplexity", "value": 3.0}]}})
    assert not update["success"] and "measurementMethod" in update["error"], update


def test_legacy_records_from_an_imported_file_stay_readable(foundry):
    result = ok(foundry.execute("alloy/import", {"paths": [
        str(FIXTURES / "loose-prior-baselines.alloy.json")]}))
    recipe_id = result["imported"][0]["recipeId"]
    read = ok(foundry.execute("data/read", {"collection": R, "id": recipe_id}))["data"]
    assert [b.get("id") or b.get("name") or b["metric"] for b in read[
        "priorMetricBaselines"]] == ["humaneval.pass@1", "v1-prune-30",
                                     "negative result: prune at 50%"]
    # And an edit of another field of that recipe is not refused because of them.
    ok(foundry.execute("data/update", {"collection": R, "id": recipe_id,
                                       "data": {"description": "edited"}}))
