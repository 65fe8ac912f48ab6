"""The recipe view is a pure function of the events: rebuilt, it is the same; caught up, each
event is applied exactly once, whichever Foundry (or thread) does it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from tests.conftest import count_events

R = "forge_recipes"


def create(foundry: Any, data: dict[str, Any]) -> str:
    result = foundry.execute("data/create", {"collection": R, "data": data})
    assert result["success"], result
    return str(result["id"])


@contextlib.contextmanager
def events_only(foundry: Any) -> Iterator[None]:
    """Saves in the block record events without their view rows (as a process that does not
    write the view would): events the view has not seen, for catch-up to apply."""
    recorder = foundry.recipes.recorder
    inline, recorder.inline = recorder.inline, None
    try:
        yield
    finally:
        recorder.inline = inline


def must(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], result
    return result


def snapshot(foundry: Any) -> list[dict[str, Any]]:
    """Every row of the view, archived ones included, in id order."""
    page = must(foundry.execute("data/list", {
        "collection": R, "includeArchived": True, "limit": 500,
        "orderBy": [{"field": "id", "direction": "asc"}],
    }))
    assert page["nextCursor"] is None
    return list(page["items"])


def populate(foundry: Any, recipe_data: dict[str, Any]) -> dict[str, int]:
    """30 recipes with edits, pins, forks and archives; returns what was done."""
    done = {"recipes": 0, "forks": 0, "archived": 0, "pinned": 0}
    for i in range(30):
        rid = create(foundry, {**recipe_data, "name": f"r{i:02d}", "author": "abc"[i % 3],
                               "tags": [f"t{i % 4}"]})
        done["recipes"] += 1
        for k in range(i % 3):
            must(foundry.execute("data/update", {
                "collection": R, "id": rid, "reason": f"edit {k}",
                "data": {"cycles": k + 2, "description": f"edited {k} times"},
            }))
        if i % 4 == 0:
            foundry.recipes.pin_recipe_version(UUID(rid), run_id="r")
            done["pinned"] += 1
            if i % 8 == 0:  # a pinned version must be raised by the next edit
                must(foundry.execute("data/update", {
                    "collection": R, "id": rid, "data": {"version": "0.2.0", "tags": ["bumped"]},
                }))
        if i % 5 == 0:
            must(foundry.execute("recipe/fork", {"id": rid, "data": {"name": f"r{i:02d}-fork"}}))
            done["forks"] += 1
        if i % 6 == 0:
            must(foundry.execute("data/delete", {"collection": R, "id": rid, "reason": "old"}))
            done["archived"] += 1
    return done


def tamper(foundry: Any, rows: list[dict[str, Any]]) -> None:
    """Damage the view behind the host's back: one row changed, one deleted."""
    view = foundry.recipe_view
    ph = view.placeholder()
    with view.datastore.transaction(commit=True) as c:
        c.execute(f"UPDATE {view.table} SET name = 'tampered', revision = 99 WHERE id = {ph}",
                  [rows[0]["id"]])
        c.execute(f"DELETE FROM {view.table} WHERE id = {ph}", [rows[1]["id"]])


def test_a_rebuilt_view_equals_the_view_built_event_by_event(foundry, recipe_data):
    done = populate(foundry, recipe_data)
    before = snapshot(foundry)
    assert len(before) == done["recipes"] + done["forks"] == 36
    assert sum(r["archived"] for r in before) == done["archived"]
    assert sum(bool(r["pinnedVersions"]) for r in before) == done["pinned"]
    assert {r["revision"] for r in before} >= {1, 2, 3, 4}

    tamper(foundry, before)
    assert foundry.recipe_host.catch_up().events == 0  # catch-up cannot see the damage
    assert snapshot(foundry) != before

    stats = foundry.recipe_host.rebuild()
    assert stats.events == count_events(foundry)  # every recipe event replayed, once
    assert foundry.recipe_host.lag == 0
    assert snapshot(foundry) == before


def test_a_second_foundry_sees_the_first_ones_writes_on_its_next_read(store_url, recipe_data):
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as a, Foundry.open(store_url) as b:
        rid = create(a, recipe_data)
        assert must(b.execute("data/read", {"collection": R, "id": rid}))["data"]["revision"] == 1
        # Events only: nothing catches the view up on this path.
        with events_only(a):
            a.recipes.pin_recipe_version(UUID(rid), run_id="run-1")
            current = a.recipes.get_recipe(UUID(rid)).data
            a.recipes.edit_recipe(UUID(rid), {**current, "version": "0.2.0", "cycles": 3},
                                  expected_revision=2, author="a", reason="r", command_id=None)
        assert b.recipe_host.lag == 2

        read = must(b.execute("data/read", {"collection": R, "id": rid}))
        assert read["found"] and read["data"]["revision"] == 3
        assert read["data"]["version"] == "0.2.0" and read["data"]["cycles"] == 3
        assert read["data"]["pinnedVersions"] == ["0.1.0"]
        listed = must(b.execute("data/list", {"collection": R, "filter": {"cycles": 3}}))
        assert [i["id"] for i in listed["items"]] == [rid]
        assert a.recipe_host.lag == b.recipe_host.lag == 0  # one view, one position


def test_catching_up_twice_applies_nothing_the_second_time(store_url, recipe_data):
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as a, Foundry.open(store_url) as b:
        ids = [create(a, {**recipe_data, "name": f"r{i}"}) for i in range(3)]
        assert a.recipe_host.catch_up().events == 0  # each create caught the view up
        with events_only(a):
            for rid in ids:  # 6 events the view has not seen
                a.recipes.pin_recipe_version(UUID(rid), run_id="r")
                current = a.recipes.get_recipe(UUID(rid)).data
                a.recipes.edit_recipe(UUID(rid), {**current, "version": "1.0.0"},
                                      expected_revision=None, author="", reason="",
                                      command_id=None)
        first = b.recipe_host.catch_up()
        assert first.events == 6
        assert b.recipe_host.catch_up().events == 0
        assert a.recipe_host.catch_up().events == 0  # the position is shared, not per host
        head = a.recipes.recorder.max_notification_id()
        assert a.recipe_view.max_tracking_id(a.recipes.name) == head
        rows = {r["id"]: r for r in snapshot(b)}
        assert all(rows[rid]["revision"] == 3 and rows[rid]["version"] == "1.0.0"
                   for rid in ids)


def test_two_hosts_catching_up_at_once_apply_every_event_exactly_once(store_url, recipe_data):
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as a, Foundry.open(store_url) as b:
        rid = create(a, recipe_data)
        book = a.recipes
        with events_only(a):
            for n in range(120):  # 120 edits the view has not seen
                current = book.get_recipe(UUID(rid)).data
                book.edit_recipe(UUID(rid), {**current, "tags": [*current["tags"], f"m{n}"]},
                                 expected_revision=None, author="", reason="", command_id=None)
        for host in (a.recipe_host, b.recipe_host):
            host.batch_size = 7  # many small batches: the two hosts interleave
        barrier = threading.Barrier(2)

        def catch_up(foundry: Any) -> int:
            barrier.wait()
            return int(foundry.recipe_host.catch_up().events)

        with ThreadPoolExecutor(2) as pool:
            applied = list(pool.map(catch_up, [a, b]))
        assert sum(applied) == 120, applied
        assert a.recipe_host.lag == 0
        row = must(a.execute("data/read", {"collection": R, "id": rid}))["data"]
        assert row["revision"] == 121
        assert row["tags"] == [*recipe_data["tags"], *(f"m{n}" for n in range(120))]
