"""Issue #16 items 5, 6, 7 through the commands, on SQLite and PostgreSQL: a gate that cannot
be dodged, Continuum's data/* semantics, artifact completeness."""

from __future__ import annotations

import copy
from typing import Any

from tests.conftest import ROOT, as_node, ok

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


# --- item 6: Continuum's data/* semantics ----------------------------------------------------

def named(recipe_data: dict[str, Any], i: int) -> dict[str, Any]:
    return {**copy.deepcopy(recipe_data), "name": f"recipe-{i}"}


def test_list_count_is_the_total_matching_unless_skipped(foundry, recipe_data):
    for i in range(5):
        create(foundry, named(recipe_data, i))
    page = ok(foundry.execute("data/list", {"collection": R, "limit": 2}))
    assert len(page["items"]) == 2 and page["count"] == 5 and page["countSkipped"] is False
    # Every page reports the same total; the filter counts, the cursor does not.
    second = ok(foundry.execute("data/list", {"collection": R, "limit": 2,
                                              "cursor": page["nextCursor"]}))
    assert second["count"] == 5
    some = {"name": {"$in": ["recipe-0", "recipe-2", "recipe-4"]}}
    filtered = ok(foundry.execute("data/list", {"collection": R, "limit": 1, "filter": some}))
    assert filtered["count"] == 3 and len(filtered["items"]) == 1
    skipped = ok(foundry.execute("data/list", {"collection": R, "limit": 2,
                                               "skipCount": True}))
    assert skipped["count"] == 2 and skipped["countSkipped"] is True


def test_fields_projects_and_verbose_false_summarises(foundry, recipe_data):
    recipe_id = create(foundry, named(recipe_data, 1))
    listed = ok(foundry.execute("data/list", {"collection": R, "fields": [
        "name", "source.baseModel", "no.such.path"]}))
    assert listed["items"] == [{"id": recipe_id, "name": "recipe-1", "source": {
        "baseModel": recipe_data["source"]["baseModel"]}}]
    brief = ok(foundry.execute("data/list", {"collection": R, "verbose": False}))
    assert set(brief["items"][0]) == {"id", "name", "version", "revision", "archived",
                                      "updatedAt"}
    bad = foundry.execute("data/list", {"collection": R, "fields": "name"})
    assert not bad["success"] and bad["errors"][0]["field"] == "fields", bad


def test_a_store_chosen_per_call_is_refused_with_a_pointer(foundry, recipe_data):
    for command, params in (
            ("data/list", {"collection": R, "backend": "sqlite"}),
            ("data/read", {"collection": R, "id": "x", "dbHandle": "default"}),
            ("data/count", {"collection": R, "dbHandle": "h"}),
            ("data/create", {"collection": R, "data": recipe_data, "backend": "mongo"})):
        refused = foundry.execute(command, params)
        assert not refused["success"] and refused["errorCode"] == "invalid_input", refused
        assert "FOUNDRY_DATABASE_URL" in refused["error"], refused
    assert ok(foundry.execute("data/count", {"collection": R}))["count"] == 0


def test_update_upsert_delete_name_the_versions_as_continuum_does(foundry, recipe_data):
    recipe_id = create(foundry, named(recipe_data, 1))
    updated = ok(foundry.execute("data/update", {"collection": R, "id": recipe_id,
                                                 "data": {"description": "x"}}))
    assert (updated["previousVersion"], updated["newVersion"]) == (1, 2)
    assert (updated["previousRevision"], updated["newRevision"]) == (1, 2)
    upserted = ok(foundry.execute("data/upsert", {"collection": R, "id": recipe_id,
                                                  "data": named(recipe_data, 2)}))
    assert (upserted["previousVersion"], upserted["newVersion"]) == (2, 3)
    fresh = "00000000-0000-4000-8000-000000000016"
    created = ok(foundry.execute("data/upsert", {"collection": R, "id": fresh,
                                                 "data": named(recipe_data, 3)}))
    assert (created["previousVersion"], created["newVersion"]) == (0, 1)
    deleted = ok(foundry.execute("data/delete", {"collection": R, "id": recipe_id}))
    assert deleted["previousVersion"] == 3 and deleted["newVersion"] == 4


# --- item 7: artifact completeness -----------------------------------------------------------

def test_the_artifact_freezes_lineage_and_the_bar(forge_env, foundry, recipe_data):
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    data["acceptanceCriteria"] = {"benchmarks": {"perplexity": {"min": 0.0}}}
    parent = create(foundry, data)
    child = ok(foundry.execute("recipe/fork", {"id": parent, "data": {"name": "child"}}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": child}))
    doc = ok(foundry.execute("data/read", {"collection": A, "id": run["artifactId"]}))["data"]
    assert doc["parentRecipeId"] == parent
    assert doc["acceptanceCriteria"] == data["acceptanceCriteria"]


def test_an_update_cannot_rewrite_lineage(foundry, recipe_data):
    parent = create(foundry, copy.deepcopy(recipe_data))
    other = create(foundry, {**copy.deepcopy(recipe_data), "name": "other"})
    child = ok(foundry.execute("recipe/fork", {"id": parent, "data": {"name": "c"}}))["id"]
    refused = foundry.execute("data/update", {"collection": R, "id": child,
                                              "data": {"parentRecipeId": other}})
    assert not refused["success"], refused
    assert refused["errors"][0]["field"] == "data.parentRecipeId"
    assert "recipe/fork" in refused["error"]
    whole = ok(foundry.execute("data/read", {"collection": R, "id": child}))["data"]
    authored = {k: v for k, v in whole.items() if k not in (
        "revision", "archived", "createdAt", "updatedAt", "pinnedVersions")}
    upsert = foundry.execute("data/upsert", {"collection": R, "id": child,
                                             "data": {**authored, "parentRecipeId": other}})
    assert not upsert["success"] and "parentRecipeId" in upsert["error"], upsert
    # The same value given back (a read-modify-write) is fine; the lineage stays.
    ok(foundry.execute("data/update", {"collection": R, "id": child, "data": {
        "parentRecipeId": parent, "description": "same lineage"}}))
    assert ok(foundry.execute("data/read", {"collection": R, "id": child}))["data"][
        "parentRecipeId"] == parent


# --- item 3: honest hardware -----------------------------------------------------------------

def test_in_process_execution_refuses_a_node_it_is_not(forge_env, foundry, recipe_data,
                                                      monkeypatch, store_url):
    import socket

    from foundry.adapters.runs.node_identity import slug

    monkeypatch.delenv("FOUNDRY_NODE_CLASS", raising=False)
    monkeypatch.delenv("FOUNDRY_NODE_SITE", raising=False)
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = create(foundry, data)
    before = ok(foundry.execute("data/count", {"collection": A}))["count"]
    refused = foundry.execute("forge/run", {"recipeId": recipe_id,
                                            "hardwareNode": "m5-pro@local"})
    assert not refused["success"] and refused["errors"][0]["field"] == "hardwareNode", refused
    assert f"cpu@{slug(socket.gethostname())}" in refused["error"]
    assert "m5-pro" in refused["error"]
    other_site = foundry.execute("forge/run", {"recipeId": recipe_id,
                                               "hardwareNode": "cpu@somewhere-else"})
    assert not other_site["success"] and "site" in other_site["error"], other_site
    # Nothing recorded, and no artifact claims hardware it never touched.
    assert ok(foundry.execute("data/count", {"collection": A}))["count"] == before
    # What this node is runs: its class at the local site, its own site, or any.
    for node in ("cpu@local", f"cpu@{slug(socket.gethostname())}", "any", "cpu@any"):
        run = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "hardwareNode": node}))
        assert run["status"] == "completed", (node, run)
    # A node configured as that class (FOUNDRY_NODE_CLASS, read at open) takes it.
    with as_node(store_url, foundry, "m5-pro") as node:
        run = ok(node.execute("forge/run", {"recipeId": recipe_id,
                                            "hardwareNode": "m5-pro@local"}))
    assert run["status"] == "completed"
