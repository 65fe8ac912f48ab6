"""The bulk rebuild (one transaction, FastDecoder, COPY on PostgreSQL, indexes built after the
load) gives every row the incremental path gave, puts the indexes back as they were, and
changes nothing when it fails half-way."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

import foundry.projections.host as projection_host
from foundry.executors.fake import build_fake_registry
from foundry.projections.replay import FastDecoder
from tests.conftest import as_node
from tests.integration.test_projection_rebuild import R, create, events_only, must, populate

# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


def rows(view: Any) -> list[dict[str, Any]]:
    """Every column of every row, JSON decoded, in key order."""
    return list(view.fetch(f"SELECT * FROM {view.table} ORDER BY {view.schema.key}", []))


def indexes(view: Any) -> list[tuple[str, str]]:
    with view.datastore.transaction(commit=False) as c:
        if view.dialect == "sqlite":
            c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                      " ORDER BY name", (view.table,))
            return [(r[0], r[1]) for r in c.fetchall()]
        c.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND "
                  "tablename = %s ORDER BY indexname", (view.datastore.schema, view.table_name))
        return [(r["indexname"], r["indexdef"]) for r in c.fetchall()]


def state(host: Any) -> tuple[Any, ...]:
    return rows(host.view), host.view.max_tracking_id(host.app.name), indexes(host.view)


def test_a_bulk_rebuild_writes_the_rows_the_incremental_path_wrote(foundry, recipe_data):
    populate(foundry, recipe_data)
    host = foundry.recipe_host
    before = state(host)
    assert len(before[0]) == 36 and before[1] == host.app.recorder.max_notification_id()
    assert len(before[2]) >= 7  # the primary key's and the six secondary indexes
    for chunk_rows in (2, None):  # 2: most entities are written, read back and written again
        if chunk_rows:
            host.view.rebuild_chunk_rows = chunk_rows
        stats = host.rebuild()
        assert stats.events == host.app.recorder.max_notification_id()
        assert state(host) == before
        vars(host.view).pop("rebuild_chunk_rows", None)


def test_the_fast_decoder_decodes_a_real_store_as_the_mapper_does(foundry, recipe_data):
    populate(foundry, recipe_data)
    forge_two_runs(foundry, recipe_data)
    for app in (foundry.recipes, foundry.runs):
        notes = app.recorder.select_notifications(start=1, limit=10_000)
        assert len(notes) > 30
        fast = FastDecoder(app.mapper)
        for n in notes:
            mine, theirs = fast(n), app.mapper.to_domain_event(n)
            assert type(mine) is type(theirs)
            assert list(mine.__dict__.items()) == list(theirs.__dict__.items())
        assert fast.fallbacks == 0


def forge_two_runs(foundry: Any, recipe_data: dict[str, Any]) -> None:
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    rid = create(foundry, {**data, "name": "forged"})
    # In-process runs execute here: for this run a process configured as that node.
    with as_node(foundry.config.url, foundry, "rtx-5090", "lab-2") as node:
        must(node.execute("forge/run", {"recipeId": rid, "hardwareNode": "rtx-5090@lab-2"}))
    foundry.use_registry(build_fake_registry(fail_on="quant"))
    must(foundry.execute("forge/run", {"recipeId": rid}))


def test_a_bulk_rebuild_of_the_artifact_view_writes_the_incremental_rows(foundry, recipe_data):
    forge_two_runs(foundry, recipe_data)
    host = foundry.artifact_host
    host.catch_up()  # the incremental path, event by event as the runs recorded them
    before = state(host)
    assert len(before[0]) == 2 and {r["status"] for r in before[0]} == {"completed", "failed"}
    host.view.rebuild_chunk_rows = 1  # every event after the first reads its row back
    host.rebuild()
    assert state(host) == before


class RebuildInterruptedError(Exception):
    pass


def test_a_rebuild_that_fails_half_way_leaves_the_old_view(foundry, recipe_data, monkeypatch):
    populate(foundry, recipe_data)
    host = foundry.recipe_host
    before = state(host)
    real_read_pages = projection_host.read_pages

    def failing_read_pages(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for n, page in enumerate(real_read_pages(*args, **kwargs)):
            if n == 3:
                raise RebuildInterruptedError
            yield page

    # Pages of 10 events, chunks of 3 rows: rows are written before the failure.
    monkeypatch.setattr(projection_host, "REBUILD_PAGE", 10)
    monkeypatch.setattr(projection_host, "read_pages", failing_read_pages)
    host.view.rebuild_chunk_rows = 3
    with pytest.raises(RebuildInterruptedError):
        host.rebuild()
    assert state(host) == before
    assert host.lag == 0

    # An event the view has not seen yet, then a rebuild that fails: still the old view.
    rid = next(r["id"] for r in before[0] if not r["archived"] and not r["pinned"])
    with events_only(foundry):
        foundry.recipes.pin_recipe_version(UUID(rid), run_id="pinned-after")
    with pytest.raises(RebuildInterruptedError):
        host.rebuild()
    assert state(host) == before and host.lag == 1

    monkeypatch.setattr(projection_host, "read_pages", real_read_pages)
    stats = host.rebuild()
    assert stats.events == host.app.recorder.max_notification_id()
    assert host.lag == 0
    after = state(host)
    assert after[2] == before[2]
    changed = [r for r in after[0] if r not in before[0]]
    assert [r["id"] for r in changed] == [rid] and changed[0]["pinned"]


def test_events_recorded_during_a_rebuild_are_caught_up_after_it(foundry, recipe_data,
                                                                monkeypatch):
    ids = [create(foundry, {**recipe_data, "name": f"r{i}"}) for i in range(5)]
    host = foundry.recipe_host
    real_read_pages = projection_host.read_pages

    writer = threading.Thread(
        target=lambda: foundry.recipes.pin_recipe_version(UUID(ids[0]), run_id="during"))

    def read_pages_then_write(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from real_read_pages(*args, **kwargs)
        # After the rebuild's last read, before its commit: another writer adds an event.
        # PostgreSQL: it commits its event now (the view's row is left to catch-up: the
        # rebuild holds the view's position lock). SQLite: the rebuild holds the write lock
        # of the file the events and the view share, so the writer waits for its commit.
        writer.start()
        writer.join(2)

    monkeypatch.setattr(projection_host, "read_pages", read_pages_then_write)
    stats = host.rebuild()
    writer.join(30)
    # The rebuild's own catch-up applied it (PostgreSQL), or the writer's transaction did.
    assert stats.events == (5 if foundry.config.kind == "sqlite" else 6)
    assert host.lag == 0
    row = must(foundry.execute("data/read", {"collection": R, "id": ids[0]}))["data"]
    assert row["pinnedVersions"] == ["0.1.0"] and row["revision"] == 2


def test_overlapping_pages_from_two_catch_ups_apply_each_event_once(foundry, recipe_data):
    """A reads events 1..k, B reads 1..n once more arrived; A commits first. B must apply only
    k+1..n: its page ends ahead of the position, but its start is behind it."""
    forge_two_runs(foundry, recipe_data)
    host = foundry.artifact_host
    host.catch_up()
    expected = state(host)
    notes = host.app.recorder.select_notifications(start=1, limit=10_000, topics=host.topics)
    items = [(host.app.mapper.to_domain_event(n), n.id) for n in notes]
    assert len(items) > 20
    host.view.reset(host.app.name)
    host.view.apply_batch(host.app.name, items[:10])  # A
    host.view.apply_batch(host.app.name, items)  # B, read before A committed
    host.view.apply_batch(host.app.name, items[5:12])  # a stale page: nothing new in it
    assert state(host) == expected
    attempts = [len(r["state"]["attempts"]) if isinstance(r["state"], dict) else None
                for r in rows(host.view)]
    assert attempts and all(a is None or a == 1 for a in attempts), attempts
