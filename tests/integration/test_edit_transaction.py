"""One durable commit per recipe edit (issue 10, item 8), on real SQLite and PostgreSQL.

An edit's events, its command record and the recipe view row (with the view's position) are
written in one transaction by the recorder (foundry.projections.inline): either all of them
are committed or none. A crash "between" them is impossible by construction: there is one
commit, and until its commit record is durable none of it exists (SQLite: one WAL file, the
view lives in the events' file; PostgreSQL: one transaction). The tests below make the view
write fail after the events were inserted and check that nothing stays.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any
from uuid import UUID

import psycopg
import pytest

from tests.conftest import PG_SERVER, count_events

R = "forge_recipes"


def must(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], result
    return result


def create(foundry: Any, data: dict[str, Any], **extra: Any) -> str:
    return str(must(foundry.execute("data/create", {"collection": R, "data": data,
                                                     **extra}))["id"])


def view_row(foundry: Any, rid: str) -> dict[str, Any] | None:
    """The stored row, read without catching the view up first."""
    row: dict[str, Any] | None = foundry.recipe_view.get(rid)
    return row


def all_rows(foundry: Any) -> list[dict[str, Any]]:
    view = foundry.recipe_view
    return list(view.fetch(f"SELECT * FROM {view.table} ORDER BY id", []))


def position(foundry: Any) -> int:
    return int(foundry.recipe_view.max_tracking_id(foundry.recipes.name) or 0)


def execute_sql(foundry: Any, sql: str) -> None:
    """A statement on the recipe view's database, committed."""
    with foundry.recipe_view.datastore.transaction(commit=True) as c:
        c.execute(sql)


def test_an_edit_commits_events_command_and_view_row_together(foundry, recipe_data):
    rid = create(foundry, recipe_data)
    inline = foundry.recipe_host.inline
    applied, events = inline.applied, count_events(foundry)
    reads: list[UUID] = []
    select_events = foundry.recipes.recorder.select_events

    def counting_select(originator_id: UUID, **kwargs: Any) -> Any:
        reads.append(originator_id)
        return select_events(originator_id, **kwargs)

    foundry.recipes.recorder.select_events = counting_select
    try:
        res = must(foundry.execute("data/update", {
            "collection": R, "id": rid, "commandId": "edit-1",
            "data": {"description": "one commit"}}))
    finally:
        del foundry.recipes.recorder.select_events
    assert reads == []  # no aggregate load from the store: the cached recipe, as saved
    assert res["newRevision"] == 2 and res["data"]["description"] == "one commit"
    assert count_events(foundry) == events + 1
    assert foundry.recipes.prior_result("edit-1")["newRevision"] == 2
    assert inline.applied == applied + 1  # folded in the edit's own transaction ...
    row = view_row(foundry, rid)
    assert row is not None and row["revision"] == 2 and row["doc"]["description"] == "one commit"
    assert position(foundry) == foundry.recipes.recorder.max_notification_id()
    assert foundry.recipe_host.catch_up().events == 0  # ... so catch-up has nothing to do


def test_an_edit_on_a_recipe_changed_elsewhere_applies_to_its_current_state(
        store_url, recipe_data):
    """The edit starts from the cached recipe without checking it is current; when another
    process saved since, the save fails on the version key and the edit runs again on a
    fresh load: the result is as if the cache had been checked."""
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as a, Foundry.open(store_url) as b:
        rid = create(a, recipe_data)
        must(b.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 5}}))
        must(b.execute("data/update", {"collection": R, "id": rid,
                                       "data": {"version": "0.3.0"}}))
        res = must(a.execute("data/update", {"collection": R, "id": rid,
                                              "data": {"description": "from a"}}))
        assert res["previousRevision"] == 3 and res["newRevision"] == 4
        assert res["data"]["cycles"] == 5 and res["data"]["version"] == "0.3.0"
        # An expected revision is checked against the store, not against a stale copy.
        must(b.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 6}}))
        res = must(a.execute("data/update", {"collection": R, "id": rid, "expectedRevision": 5,
                                              "data": {"cycles": 7}}))
        assert res["newRevision"] == 6 and res["data"]["description"] == "from a"
        stale = a.execute("data/update", {"collection": R, "id": rid, "expectedRevision": 5,
                                          "data": {"cycles": 8}})
        assert stale["success"] is False and stale["errorCode"] == "revision_conflict"
        # Setting a field to the value a stale copy already has is still an edit.
        must(b.execute("data/update", {"collection": R, "id": rid, "data": {"cycles": 9}}))
        res = must(a.execute("data/update", {"collection": R, "id": rid,
                                              "data": {"cycles": 7}}))
        assert res["changes"] == [{"field": "cycles", "old": 9, "new": 7}]
        assert must(b.execute("data/read", {"collection": R, "id": rid}))["data"]["cycles"] == 7


def _refuse_view_updates(foundry: Any) -> None:
    """A trigger that fails every UPDATE of a recipe view row (a database-side failure)."""
    view = foundry.recipe_view
    if view.dialect == "sqlite":
        execute_sql(foundry, f"CREATE TRIGGER refuse BEFORE UPDATE ON {view.table} "
                    "BEGIN SELECT RAISE(ABORT, 'view write refused by the test'); END")
        return
    schema = view.datastore.schema
    execute_sql(foundry, f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger '
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'view write refused by the "
                "test'; END $$")
    execute_sql(foundry, f"CREATE TRIGGER refuse BEFORE UPDATE ON {view.table} "
                f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()')


def _allow_view_updates(foundry: Any) -> None:
    on = "" if foundry.recipe_view.dialect == "sqlite" else f" ON {foundry.recipe_view.table}"
    execute_sql(foundry, f"DROP TRIGGER refuse{on}")


def _break_view_row(foundry: Any, rid: str) -> None:
    """A row whose document is a list, not an object: the fold (Python) fails on it."""
    view = foundry.recipe_view
    ph = view.placeholder()
    with view.datastore.transaction(commit=True) as c:
        c.execute(f"UPDATE {view.table} SET doc = {ph} WHERE id = {ph}", ['[1]', rid])


@pytest.mark.parametrize("failure", ["database", "python"])
def test_an_edit_whose_view_write_fails_leaves_no_events_and_no_command_record(
        foundry, recipe_data, failure):
    rid = create(foundry, recipe_data)
    events, at = count_events(foundry), position(foundry)
    before = view_row(foundry, rid)
    if failure == "database":
        _refuse_view_updates(foundry)
    else:
        _break_view_row(foundry, rid)
        before = view_row(foundry, rid)
    edit = {"collection": R, "id": rid, "commandId": "edit-x",
            "data": {"description": "never stored"}}

    res = foundry.execute("data/update", edit)

    assert res["success"] is False and res["errorCode"] == "internal_error", res
    assert count_events(foundry) == events  # the events were inserted, then rolled back
    assert foundry.recipes.prior_result("edit-x") is None  # so was the command record
    assert view_row(foundry, rid) == before and position(foundry) == at
    assert foundry.recipes.get_recipe(UUID(rid)).revision == 1  # the cached copy too
    assert [i["event"] for i in must(foundry.execute(
        "data/history", {"collection": R, "id": rid}))["items"]] == ["Created"]

    if failure == "database":
        _allow_view_updates(foundry)
    else:
        foundry.recipe_host.rebuild()  # the row from the events again
    again = must(foundry.execute("data/update", edit))  # the same command id is free
    assert again["newRevision"] == 2 and again["data"]["description"] == "never stored"
    assert count_events(foundry) == events + 1


def test_catch_up_during_edits_applies_every_event_exactly_once(store_url, recipe_data):
    """Edits in one Foundry, catch-up in a loop in another. Every fourth edit is recorded
    without its view row (as by a process that does not write the view), so the view falls
    behind, the next edits leave their rows to catch-up, and both paths interleave. Every
    event must be folded exactly once: by an edit's transaction or by a catch-up batch."""
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as a, Foundry.open(store_url) as b:
        applied_by_batches = [0]
        lock = threading.Lock()
        for f in (a, b):
            apply_batch = f.recipe_view.apply_batch

            def counting(name: str, items: Any, _apply: Any = apply_batch) -> int:
                n = int(_apply(name, items))
                with lock:
                    applied_by_batches[0] += n
                return n

            f.recipe_view.apply_batch = counting
            f.recipe_host.batch_size = 3
        ids = [create(a, {**recipe_data, "name": f"c{i}"}) for i in range(4)]
        done = threading.Event()
        errors: list[BaseException] = []

        def edits() -> None:
            try:
                inline = a.recipe_host.inline
                for n in range(60):
                    rid = ids[n % len(ids)]
                    if n % 4 == 3:
                        a.recipes.recorder.inline = None
                        try:
                            a.recipes.edit_recipe(
                                UUID(rid), lambda d, n=n: {**d, "tags": [*d["tags"], f"m{n}"]},
                                expected_revision=None, author="", reason="", command_id=None)
                        finally:
                            a.recipes.recorder.inline = inline
                        continue
                    must(a.execute("data/update", {"collection": R, "id": rid, "data": {
                        "tags": [*a.recipes.get_recipe(UUID(rid)).data["tags"], f"m{n}"]}}))
            except BaseException as e:  # reported by the main thread
                errors.append(e)
            finally:
                done.set()

        def catch_up() -> None:
            try:
                while not done.is_set():
                    b.recipe_host.catch_up()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=edits), threading.Thread(target=catch_up)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        b.recipe_host.catch_up()
        total = count_events(a)
        inline_applied = a.recipe_host.inline.applied + b.recipe_host.inline.applied
        assert a.recipe_host.inline.deferred > 0  # the behind path was taken
        assert inline_applied > 0 and applied_by_batches[0] > 0
        assert inline_applied + applied_by_batches[0] == total == 4 + 60
        assert position(a) == a.recipes.recorder.max_notification_id()
        incremental = all_rows(a)
        for rid in ids:
            tags = next(r for r in incremental if r["id"] == rid)["doc"]["tags"]
            k = ids.index(rid)
            assert tags == [*recipe_data["tags"], *(f"m{n}" for n in range(k, 60, 4))]
        a.recipe_host.rebuild()
        assert all_rows(a) == incremental  # rebuild equals incremental


def test_a_rebuild_equals_the_rows_written_by_edits(foundry, recipe_data):
    ids = [create(foundry, {**recipe_data, "name": f"r{i}"}) for i in range(6)]
    for n, rid in enumerate(ids):
        must(foundry.execute("data/update", {"collection": R, "id": rid,
                                             "data": {"cycles": n + 2}}))
        if n % 2:
            foundry.recipes.pin_recipe_version(UUID(rid), run_id=f"run-{n}")
        if n % 3 == 0:
            must(foundry.execute("data/delete", {"collection": R, "id": rid}))
    must(foundry.execute("recipe/fork", {"id": ids[1], "data": {"name": "forked"}}))
    assert foundry.recipe_host.catch_up().events == 0  # every row was written by its edit
    incremental = all_rows(foundry)
    stats = foundry.recipe_host.rebuild()
    assert stats.events == count_events(foundry)
    assert all_rows(foundry) == incremental


def test_a_store_with_the_recipe_view_in_the_views_file_is_rebuilt_on_open(
        tmp_path, recipe_data):
    """Stores written before the move: the recipe view in foundry.views.db. On open it is
    rebuilt in foundry.db from the events and dropped from the views file."""
    from foundry.adapters.bootstrap import RECIPE_VIEW_NAME, Foundry, _build_view
    from foundry.projections.host import ProjectionHost
    from foundry.projections.recipes.fold import TOPICS
    from foundry.projections.recipes.view import RecipeViewSQLite

    url = f"sqlite:///{tmp_path / 'foundry.db'}"
    with Foundry.open(url) as f:
        ids = [create(f, {**recipe_data, "name": f"old{i}"}) for i in range(3)]
        must(f.execute("data/update", {"collection": R, "id": ids[0], "data": {"cycles": 9}}))
        # The old layout: the view in the views file, caught up there ...
        old = _build_view(f.config, RECIPE_VIEW_NAME, RecipeViewSQLite, {}, purpose="views")
        assert ProjectionHost(f.recipes, old, TOPICS).catch_up().events == 4
        old.datastore.close()
        # ... and none in the events' file.
        execute_sql(f, "DROP TABLE recipes")
        execute_sql(f, "DELETE FROM tracking")
        head = f.recipes.recorder.max_notification_id()
    views = tmp_path / "foundry.views.db"

    with Foundry.open(url) as f:
        assert position(f) == head
        rows = {r["id"]: r for r in all_rows(f)}
        assert set(rows) == set(ids) and rows[ids[0]]["revision"] == 2
        assert rows[ids[0]]["doc"]["cycles"] == 9
        conn = sqlite3.connect(views)
        try:
            assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'recipes'"
                                ).fetchall() == []
            assert conn.execute("SELECT * FROM tracking WHERE application_name = ?",
                                (f.recipes.name,)).fetchall() == []
        finally:
            conn.close()
        applied = f.recipe_host.inline.applied
        must(f.execute("data/update", {"collection": R, "id": ids[1], "data": {"cycles": 5}}))
        assert f.recipe_host.inline.applied == applied + 1  # in step again: one commit

    with Foundry.open(url) as f:  # opening again changes nothing
        assert position(f) == head + 1 and len(all_rows(f)) == 3


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)  # the store this is about
def test_postgres_edit_transaction_leaves_no_session_in_a_transaction(foundry, recipe_data):
    """The PostgreSQL recorder sends BEGIN/COMMIT itself (pipeline mode): after a failed
    edit its pooled connection must be back outside any transaction."""
    assert foundry.recipe_view.dialect == "postgres"
    rid = create(foundry, recipe_data)
    _refuse_view_updates(foundry)
    assert foundry.execute("data/update", {"collection": R, "id": rid,
                                           "data": {"cycles": 3}})["success"] is False
    _allow_view_updates(foundry)
    schema = foundry.recipe_view.datastore.schema
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        stuck = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%' "
            "AND query ILIKE %s", (f"%{schema}%",)).fetchone()
    assert stuck == (0,)
    assert must(foundry.execute("data/update", {"collection": R, "id": rid,
                                                "data": {"cycles": 3}}))["newRevision"] == 2
