"""An event a view cannot apply is set aside; the view's other rows stay current (#17 item 8).

A bad row is planted in the events table by SQL, after the view's position, and good events are
written after it: catch-up (and a rebuild) must project the good ones, set the bad one aside
under its notification id, name it when its row is read and in `audit events`. A failure of
the store itself is not an event's fault: catch-up stops and nothing is set aside.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from foundry.projections import quarantine as q
from tests.conftest import EXAMPLE, ok

# Fake executors and a private state dir; the conftest foundry opens the store after them.
pytestmark = pytest.mark.usefixtures("forge_env")


def _create(f: Any, name: str) -> str:
    data = {**json.loads(EXAMPLE.read_text()), "name": name}
    return str(ok(f.execute("data/create", {"collection": "forge_recipes", "data": data}))["id"])


def _plant(f: Any, like: str, state: bytes) -> tuple[str, int]:
    """Insert a new recipe's first event by SQL, copying `like`'s topic, with `state`;
    returns the new aggregate id and its notification id."""
    recorder, kind = f.recipes.recorder, f.config.kind
    new = uuid.uuid4()
    with recorder.datastore.transaction(commit=True) as curs:
        if kind == "sqlite":
            table = recorder.events_table_name
            curs.execute(f"SELECT topic FROM {table} WHERE originator_id = ? "
                         "AND originator_version = 1", (uuid.UUID(like).hex,))
            topic = curs.fetchone()[0]
            curs.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, "
                         "state) VALUES (?, 1, ?, ?)", (new.hex, topic, state))
            curs.execute("SELECT last_insert_rowid()")
            return str(new), int(curs.fetchone()[0])
        table = f'"{recorder.datastore.schema}".{recorder.events_table_name}'
        curs.execute(f"SELECT topic FROM {table} WHERE originator_id = %s "
                     "AND originator_version = 1", (uuid.UUID(like),))
        topic = curs.fetchone()["topic"]
        curs.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                     "VALUES (%s, 1, %s, %s) RETURNING notification_id", (new, topic, state))
        return str(new), int(curs.fetchone()["notification_id"])


def _state_of(f: Any, recipe_id: str) -> bytes:
    return bytes(f.recipes.recorder.select_events(uuid.UUID(recipe_id))[0].state)


def _assert_set_aside(f: Any, bad: str, nid: int, after: list[str]) -> None:
    for good in after:  # written after the bad row: projected
        assert ok(f.execute("data/read", {"collection": "forge_recipes", "id": good}))
    read = f.execute("data/read", {"collection": "forge_recipes", "id": bad})
    assert read["success"] is False and read["errorCode"] == "event_damaged", read
    assert bad in read["error"] and f"notification {nid} " in read["error"], read
    audit = ok(f.execute("audit/events", {}))
    assert audit["ok"] is False, audit
    [record] = audit["quarantined"]
    assert (record["view"], record["originatorId"], record["notificationId"],
            record["version"]) == ("forge_recipes", bad, nid, 1), record
    view = f.recipe_host.view
    assert view.max_tracking_id(f.recipes.name) == f.recipes.recorder.max_notification_id()


def test_a_garbled_event_is_set_aside_and_later_events_are_projected(foundry: Any) -> None:
    first = _create(foundry, "before-the-bad-row")
    bad, nid = _plant(foundry, first, b"{garbled")
    # The view is now behind the planted row: these saves leave their events to catch-up,
    # which each create's answer runs (it used to stop at the planted row: every create
    # after it failed to read its own recipe back).
    after = [_create(foundry, f"after-the-bad-row-{i}") for i in range(3)]

    assert foundry.recipe_host.catch_up().events == 0  # nothing left behind
    _assert_set_aside(foundry, bad, nid, [first, *after])
    [record] = foundry.recipe_host.view.quarantined()
    assert "garbled" not in record.reason  # the damaged bytes are not repeated


def test_a_rebuild_sets_aside_the_same_event(foundry: Any) -> None:
    first = _create(foundry, "before-the-bad-row")
    bad, nid = _plant(foundry, first, b"{garbled")
    after = [_create(foundry, "after-the-bad-row")]
    foundry.recipe_host.catch_up()
    before = foundry.recipe_host.view.quarantined()

    for _ in range(2):  # deterministic: every rebuild sets aside the same record
        stats = foundry.recipe_host.rebuild()
        assert stats.quarantined == 1, stats
        assert foundry.recipe_host.view.quarantined() == before
    _assert_set_aside(foundry, bad, nid, [first, *after])


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_value_postgresql_refuses_is_set_aside(foundry: Any) -> None:
    """The event decodes (a NUL in a name, as an unchecked import wrote), but jsonb refuses
    it: the write's data error sets the event aside; SQLite would store it."""
    first = _create(foundry, "nul-source")
    state = _state_of(foundry, first).replace(b'"nul-source"', b'"nul\\u0000source"', 1)
    bad, nid = _plant(foundry, first, state)
    after = [_create(foundry, "after-the-nul")]

    _assert_set_aside(foundry, bad, nid, [first, *after])
    [record] = foundry.recipe_host.view.quarantined()
    assert record.reason.startswith(("DataError", "UntranslatableCharacter")), record


def test_a_lost_connection_is_not_set_aside(foundry: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A store failure stops catch-up at the same position; the next catch-up applies the
    event, and nothing was set aside."""
    first = _create(foundry, "before")
    bad, _ = _plant(foundry, first, _state_of(foundry, first))  # a good event, copied
    view = foundry.recipe_host.view
    position = view.max_tracking_id(foundry.recipes.name)
    real = view.apply_batch

    def lost(*_args: Any) -> int:
        msg = "server closed the connection unexpectedly"
        raise OperationalError(msg)

    monkeypatch.setattr(view, "apply_batch", lost)
    with pytest.raises(OperationalError):
        foundry.recipe_host.catch_up()
    assert view.max_tracking_id(foundry.recipes.name) == position
    assert view.quarantined() == []

    monkeypatch.setattr(view, "apply_batch", real)
    assert foundry.recipe_host.catch_up().events == 1
    assert ok(foundry.execute("data/read", {"collection": "forge_recipes", "id": bad}))


@pytest.mark.parametrize(("error", "fault"), [
    (OperationalError("connection lost"), False),
    (ConnectionResetError(), False),
    (KeyError("name"), True),
    (ValueError("not a recipe"), True),
])
def test_only_an_events_own_errors_are_record_faults(error: Exception, fault: bool) -> None:
    assert q.is_record_fault(error) is fault


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_projections_run_on_postgresql_goes_past_a_garbled_event(foundry: Any) -> None:
    """The library's runner decodes before our code sees the event: the error stops it, the
    host sets the event aside, and the runners resume after it."""
    from foundry.projections.runner import run_projections

    first = _create(foundry, "before-the-bad-row")
    bad, nid = _plant(foundry, first, b"{garbled")
    after = [_create(foundry, "after-the-bad-row")]
    foundry.recipe_host.view.reset(foundry.recipes.name)  # everything to project again
    foundry.artifact_host.view.reset(foundry.runs.name)

    run_projections(foundry, stop_after=3)

    view = foundry.recipe_host.view
    assert view.max_tracking_id(foundry.recipes.name) == \
        foundry.recipes.recorder.max_notification_id()
    assert [r.notification_id for r in view.quarantined()] == [nid]
    assert view.get(first) is not None and view.get(after[0]) is not None
    with pytest.raises(q.QuarantinedRecordError, match=bad):
        view.get(bad)
