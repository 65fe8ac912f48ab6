"""The data/* contract, scenario by scenario, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conftest import count_events

R = "forge_recipes"


def create(foundry: Any, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    result = foundry.execute("data/create", {"collection": R, "data": data, **extra})
    assert result["success"], result
    return result


def test_create_then_read_returns_the_validated_recipe(foundry, recipe_data):
    created = create(foundry, recipe_data, author="ana")
    read = foundry.execute("data/read", {"collection": R, "id": created["id"]})
    assert read["success"] and read["found"]
    assert read["data"]["name"] == recipe_data["name"]
    assert read["data"]["stages"][0]["minHeadsPerLayer"] == 4  # defaults filled in
    assert read["data"]["revision"] == 1
    assert read["data"]["id"] == created["id"]
    assert "timestamp" in read


def test_read_of_an_unknown_id_is_found_false(foundry):
    read = foundry.execute("data/read", {"collection": R,
                                         "id": "00000000-0000-0000-0000-000000000000"})
    assert read["success"] and read["found"] is False and read["data"] is None


def test_update_changes_fields_and_reports_revisions_and_changes(foundry, recipe_data):
    rid = create(foundry, recipe_data)["id"]
    result = foundry.execute("data/update", {
        "collection": R, "id": rid, "data": {"description": "new words", "cycles": 2},
        "author": "bo", "reason": "clearer", "expectedRevision": 1,
    })
    assert result["success"], result
    assert (result["found"], result["previousRevision"], result["newRevision"]) == (True, 1, 2)
    assert {c["field"] for c in result["changes"]} == {"description", "cycles"}
    assert result["data"]["cycles"] == 2 and result["data"]["description"] == "new words"


def test_stale_expected_revision_is_refused_naming_the_current_one(foundry, recipe_data):
    rid = create(foundry, recipe_data)["id"]
    foundry.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 2}})
    before = count_events(foundry)
    result = foundry.execute("data/update", {"collection": R, "id": rid,
                                             "data": {"cycles": 3}, "expectedRevision": 1})
    assert not result["success"] and result["errorCode"] == "revision_conflict"
    assert "current revision is 2" in result["error"]
    assert count_events(foundry) == before


def test_repeated_command_id_returns_the_first_result_and_writes_nothing(foundry, recipe_data):
    first = create(foundry, recipe_data, commandId="cmd-create-1")
    before = count_events(foundry)
    again = create(foundry, recipe_data, commandId="cmd-create-1")
    assert again["id"] == first["id"] and count_events(foundry) == before
    upd = {"collection": R, "id": first["id"], "data": {"cycles": 4}, "commandId": "cmd-u"}
    one = foundry.execute("data/update", upd)
    two = foundry.execute("data/update", upd)
    assert one["newRevision"] == two["newRevision"] == 2
    # The same commandId with other params is another command: refused, never silently the
    # first one's result (#17: idempotency keys bind the payload).
    other = foundry.execute("data/update", {**upd, "data": {"cycles": 5}})
    assert other["success"] is False and other["errorCode"] == "command_conflict", other
    read = foundry.execute("data/read", {"collection": R, "id": first["id"]})
    assert read["data"]["cycles"] == 4 and read["data"]["revision"] == 2


def test_upsert_creates_then_replaces(foundry, recipe_data):
    rid = "5b0c7f7e-8f43-4f4b-9a57-0a4e7b6c1d2e"
    made = foundry.execute("data/upsert", {"collection": R, "id": rid, "data": recipe_data})
    assert made["success"] and made["created"] is True, made
    changed = copy.deepcopy(recipe_data)
    changed["tags"] = ["only"]
    again = foundry.execute("data/upsert", {"collection": R, "id": rid, "data": changed})
    assert again["success"] and again["created"] is False and again["newRevision"] == 2
    assert again["data"]["tags"] == ["only"]


def test_delete_archives_and_keeps_history(foundry, recipe_data):
    rid = create(foundry, recipe_data)["id"]
    deleted = foundry.execute("data/delete", {"collection": R, "id": rid, "reason": "old"})
    assert deleted["success"] and deleted["found"] and deleted["deleted"]
    listed = foundry.execute("data/list", {"collection": R})
    assert rid not in [i["id"] for i in listed["items"]]
    archived = foundry.execute("data/list", {"collection": R, "includeArchived": True})
    assert rid in [i["id"] for i in archived["items"]]
    history = foundry.execute("data/history", {"collection": R, "id": rid})
    assert [h["event"] for h in history["items"]] == ["Created", "Archived"]
    refused = foundry.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 2}})
    assert refused["errorCode"] == "archived"


def test_history_lists_each_edit_with_who_what_and_revision(foundry, recipe_data):
    rid = create(foundry, recipe_data, author="ana")["id"]
    foundry.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 2},
                                    "author": "bo", "reason": "more", "commandId": "c9"})
    history = foundry.execute("data/history", {"collection": R, "id": rid})
    assert history["success"] and history["count"] == 2
    edit = history["items"][1]
    assert edit["revision"] == 2 and edit["author"] == "bo" and edit["reason"] == "more"
    assert edit["changes"] == [{"field": "cycles", "old": 1, "new": 2}]
    assert edit["commandId"] == "c9" and edit["at"]


def test_pinned_version_requires_a_strictly_greater_version(foundry, recipe_data):
    from uuid import UUID

    rid = create(foundry, recipe_data)["id"]
    foundry.recipes.pin_recipe_version(UUID(rid), run_id="run-1")
    before = count_events(foundry)
    same = foundry.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 2}})
    assert same["errorCode"] == "version_pinned" and "strictly greater" in same["error"]
    lower = foundry.execute("data/update", {"collection": R, "id": rid,
                                            "data": {"cycles": 2, "version": "0.0.9"}})
    assert lower["errorCode"] == "version_pinned"
    assert count_events(foundry) == before
    raised = foundry.execute("data/update", {"collection": R, "id": rid,
                                             "data": {"cycles": 2, "version": "0.2.0"}})
    assert raised["success"], raised


def test_fork_keeps_lineage_to_the_parent(foundry, recipe_data):
    parent = create(foundry, recipe_data)["id"]
    child = foundry.execute("recipe/fork", {"id": parent, "data": {"name": "child"}})
    assert child["success"] and child["parentRecipeId"] == parent
    assert child["data"]["parentRecipeId"] == parent and child["data"]["name"] == "child"
    history = foundry.execute("data/history", {"collection": R, "id": child["id"]})
    assert history["items"][0]["event"] == "Forked"


def test_list_filters_orders_and_pages_in_the_database(foundry, recipe_data):
    for i in range(7):
        data = {**recipe_data, "name": f"r{i}", "author": "ana" if i % 2 else "bo",
                "tags": ["even"] if i % 2 == 0 else ["odd"], "cycles": i + 1}
        create(foundry, data)
    seen: list[str] = []
    cursor = None
    while True:
        page = foundry.execute("data/list", {
            "collection": R, "filter": {"tags": {"$contains": "even"}},
            "orderBy": [{"field": "cycles", "direction": "desc"}], "limit": 2, "cursor": cursor,
        })
        assert page["success"], page
        seen += [i["name"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["r6", "r4", "r2", "r0"]
    count = foundry.execute("data/count", {"collection": R, "filter": {"author": "ana"}})
    assert count["count"] == 3
    query = foundry.execute("data/query", {"collection": R,
                                           "filter": {"name": {"$in": ["r1", "r3"]}}})
    assert sorted(i["name"] for i in query["items"]) == ["r1", "r3"]


def test_artifact_collection_refuses_writes(foundry, recipe_data):
    for command in ("data/create", "data/update", "data/upsert", "data/delete"):
        params = {"collection": "forge_artifacts", "id": "00000000-0000-0000-0000-000000000001",
                  "data": recipe_data}
        if command == "data/delete":
            params.pop("data")
        result = foundry.execute(command, params)
        assert not result["success"]
        assert "generated by the foundry" in result["error"], (command, result)


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"data": {"stages": [{"type": "prune", "strategy": "magnitude", "level": 1.5}]}},
         "data.stages.0.prune.level", "less than or equal to 0.9"),
        ({"data": {"cycles": 0}}, "data.cycles", "greater than or equal to 1"),
        ({"data": {"version": "1.0"}}, "data.version", "semantic version"),
        ({"data": {"calibrationCorpus": {"name": "c", "contentHash": "sha256:abc",
                                         "sizeBytes": 1}}},
         "data.calibrationCorpus.contentHash", "64 lowercase hex"),
        ({"data": {"stages": [{"type": "teleport"}]}}, "data.stages.0", "prune"),
        ({"data": {"cycles": "many"}}, "data.cycles", "integer"),
    ],
)
def test_bad_recipe_input_names_the_field_and_rule_and_writes_nothing(
    foundry, recipe_data, params, field, rule
):
    before = count_events(foundry)
    data = {**recipe_data, **params["data"]}
    result = foundry.execute("data/create", {"collection": R, "data": data})
    assert result["success"] is False and result["errorCode"] == "invalid_input"
    assert result["errors"][0]["field"] == field, result
    assert rule in result["error"], result
    assert count_events(foundry) == before


@pytest.mark.parametrize(
    ("command", "params", "field"),
    [
        ("data/teleport", {}, "command"),
        ("data/create", {"collection": "spells", "data": {}}, "collection"),
        ("data/create", [], "params"),
        ("data/list", {"collection": R, "limit": 501}, "limit"),
        ("data/list", {"collection": R, "filter": {"name": {"$near": 1}}}, "name"),
        ("data/read", {"collection": R}, "id"),
        ("data/update", {"collection": R, "id": "not-a-uuid", "data": {}}, "id"),
        ("data/create", {"collection": R, "data": {}, "bogus": 1}, "bogus"),
    ],
)
def test_bad_params_are_refused_with_the_field(foundry, command, params, field):
    before = count_events(foundry)
    result = foundry.execute(command, params)
    assert result["success"] is False
    assert field in result["error"], result
    assert count_events(foundry) == before


def test_a_ten_megabyte_payload_is_refused_before_parsing(foundry, recipe_data):
    before = count_events(foundry)
    huge = {**recipe_data, "description": "x" * 10_000_000}
    result = foundry.execute("data/create", {"collection": R, "data": huge})
    assert result["success"] is False and result["errors"][0]["field"] == "params"
    assert "limit is 1048576 bytes" in result["error"]
    assert count_events(foundry) == before


def test_unknown_recipe_fields_are_kept(foundry, recipe_data):
    rid = create(foundry, {**recipe_data, "futureField": {"a": 1}})["id"]
    read = foundry.execute("data/read", {"collection": R, "id": rid})
    assert read["data"]["futureField"] == {"a": 1}
