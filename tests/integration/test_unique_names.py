"""Recipe names are unique among live recipes (#16 item 6), on SQLite and PostgreSQL.

data/create and data/update refuse a name another live recipe holds (`name_taken`, naming the
field and the holder); fork and import pick a free "<name> (n)" and say so; two concurrent
creates of one name end with one success; a store whose older events hold duplicates still
rebuilds and shows them as recorded.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

from foundry.adapters.http.errors import status_for
from foundry.domain.recipe import Recipe
from tests.conftest import ROOT, count_events, ok

R = "forge_recipes"
FIXTURES = ROOT / "tests" / "fixtures" / "alloys"


def create(foundry: Any, data: dict[str, Any], name: str) -> dict[str, Any]:
    return foundry.execute("data/create", {"collection": R, "data": {**data, "name": name}})


def names(foundry: Any, **params: Any) -> list[str]:
    listed = ok(foundry.execute("data/list", {"collection": R, "limit": 500, **params}))
    return sorted(i["name"] for i in listed["items"])


def test_a_create_with_a_live_name_is_refused_naming_the_field_and_the_holder(
        foundry, recipe_data):
    first = ok(create(foundry, recipe_data, "alpha"))
    before = count_events(foundry)
    again = create(foundry, recipe_data, "alpha")
    assert again["success"] is False and again["errorCode"] == "name_taken", again
    assert again["errors"][0]["field"] == "data.name"
    assert again["errors"][0]["recipeId"] == first["id"]
    assert again["conflictingRecipeId"] == first["id"]
    assert first["id"] in again["error"]
    assert status_for("name_taken") == 409
    assert count_events(foundry) == before  # nothing of the refused create was written
    assert names(foundry) == ["alpha"]


def test_an_update_to_a_taken_name_is_refused_and_a_free_one_is_not(foundry, recipe_data):
    a = ok(create(foundry, recipe_data, "a"))["id"]
    b = ok(create(foundry, recipe_data, "b"))["id"]
    refused = foundry.execute("data/update", {"collection": R, "id": b, "data": {"name": "a"}})
    assert refused["errorCode"] == "name_taken" and refused["conflictingRecipeId"] == a
    read = ok(foundry.execute("data/read", {"collection": R, "id": b}))["data"]
    assert (read["name"], read["revision"]) == ("b", 1)  # nothing written
    ok(foundry.execute("data/update", {"collection": R, "id": b, "data": {"name": "c"}}))
    # Its own name is not "taken": an edit of other fields, or giving the same name back.
    ok(foundry.execute("data/update", {"collection": R, "id": a,
                                       "data": {"name": "a", "description": "x"}}))
    upsert = foundry.execute("data/upsert", {"collection": R, "id": a,
                                             "data": {**recipe_data, "name": "c"}})
    assert upsert["errorCode"] == "name_taken", upsert
    assert names(foundry) == ["a", "c"]


def test_a_deleted_recipe_frees_its_name(foundry, recipe_data):
    a = ok(create(foundry, recipe_data, "reused"))["id"]
    ok(foundry.execute("data/delete", {"collection": R, "id": a}))
    b = ok(create(foundry, recipe_data, "reused"))["id"]
    assert a != b
    assert names(foundry) == ["reused"]
    assert names(foundry, includeArchived=True) == ["reused", "reused"]


def test_fork_picks_the_next_free_name_and_says_so(foundry, recipe_data):
    parent = ok(create(foundry, recipe_data, "base"))["id"]
    one = ok(foundry.execute("recipe/fork", {"id": parent, "data": {}}))
    assert (one["name"], one["renamedFrom"], one["data"]["name"]) == ("base (2)", "base",
                                                                      "base (2)")
    two = ok(foundry.execute("recipe/fork", {"id": parent, "data": {}}))
    assert two["data"]["name"] == "base (3)"
    # A fork of a fork counts on from its suffix, it does not nest them.
    three = ok(foundry.execute("recipe/fork", {"id": one["id"], "data": {}}))
    assert three["data"]["name"] == "base (4)"
    history = ok(foundry.execute("data/history", {"collection": R, "id": two["id"]}))
    assert history["items"][0]["event"] == "Forked"
    # A name the caller chose is the caller's: refused when taken, kept when free.
    chosen = foundry.execute("recipe/fork", {"id": parent, "data": {"name": "base (2)"}})
    assert chosen["errorCode"] == "name_taken" and chosen["conflictingRecipeId"] == one["id"]
    free = ok(foundry.execute("recipe/fork", {"id": parent, "data": {"name": "mine"}}))
    assert free["data"]["name"] == "mine" and "renamedFrom" not in free


def test_import_picks_a_free_name_and_the_report_says_so(foundry, recipe_data, tmp_path: Path):
    source = json.loads((FIXTURES / "legacy-deliver.alloy.json").read_text())
    holder = ok(create(foundry, recipe_data, source["name"]))["id"]
    path = tmp_path / "same-name.alloy.json"
    path.write_text(json.dumps(source))
    report = ok(foundry.execute("alloy/import", {"paths": [str(path)]}))["imported"][0]
    assert report["renamedFrom"] == source["name"], report
    assert report["name"] == f"{source['name']} (2)"
    stored = ok(foundry.execute("data/read", {"collection": R, "id": report["recipeId"]}))
    assert stored["data"]["name"] == f"{source['name']} (2)"
    assert report["recipeId"] != holder
    # The same file again is the same command: the same answer, nothing new.
    before = count_events(foundry)
    again = ok(foundry.execute("alloy/import", {"paths": [str(path)]}))["imported"][0]
    assert again["recipeId"] == report["recipeId"] and count_events(foundry) == before


def test_two_concurrent_creates_of_one_name_end_with_one_success(store_url, recipe_data):
    from foundry.adapters.bootstrap import Foundry

    writers = 4
    with Foundry.open(store_url) as first:
        others = [Foundry.open(store_url) for _ in range(writers - 1)]
        stores = [first, *others]
        try:
            for round_ in range(5):
                name = f"race-{round_}"
                gate = threading.Barrier(writers)
                results: list[dict[str, Any]] = []

                def write(store: Any, name: str = name, gate: threading.Barrier = gate,
                          results: list[dict[str, Any]] = results) -> None:
                    data = copy.deepcopy(recipe_data)
                    gate.wait()
                    results.append(create(store, data, name))

                threads = [threading.Thread(target=write, args=(s,)) for s in stores]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                codes = sorted(r.get("errorCode", "ok") for r in results)
                assert codes == ["name_taken"] * (writers - 1) + ["ok"], results
            assert names(first) == [f"race-{n}" for n in range(5)]
        finally:
            for other in others:
                other.close()


def test_duplicates_recorded_before_the_rule_still_rebuild_and_show_as_recorded(
        foundry, recipe_data):
    from foundry.adapters.store.recipe_data import validate_recipe

    # Events as an older Foundry wrote them: saved without the name check.
    data = validate_recipe({**recipe_data, "name": "twin"})
    ids = []
    for _ in range(2):
        rid = uuid4()
        foundry.recipes.save(Recipe.create(id=rid, data={**data, "id": str(rid)}, author="old",
                                           command_id=None))
        ids.append(str(rid))
    foundry.services.recipe_host.rebuild()
    assert names(foundry) == ["twin", "twin"]
    # Editing other fields of a duplicate is fine (it claims nothing); a new claim is checked.
    ok(foundry.execute("data/update", {"collection": R, "id": ids[0],
                                       "data": {"description": "kept"}}))
    assert create(foundry, recipe_data, "twin")["errorCode"] == "name_taken"
    ok(foundry.execute("data/update", {"collection": R, "id": ids[1], "data": {"name": "solo"}}))
    assert names(foundry) == ["solo", "twin"]
