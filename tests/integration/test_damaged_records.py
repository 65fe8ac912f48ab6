"""Records that used to crash every read become envelopes naming the record (#17 item 12).

Each case is built on a real store (SQLite and PostgreSQL): `forge list` after importing the
fixture alloys, a recipe whose parentRecipeId names no recipe, and a stored event whose state
was garbled in the events table itself.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.commands.lineage_markdown import render_markdown
from tests.conftest import EXAMPLE, ROOT, ok

ALLOYS = ROOT / "tests" / "fixtures" / "alloys"
EXECUTED = ALLOYS / "executed-with-results.alloy.json"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "fake")
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return tmp_path


@pytest.fixture
def foundry(store_url: str, env: Path) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        yield f


def test_forge_list_after_importing_the_fixture_alloys(foundry: Any) -> None:
    imported = ok(foundry.execute("alloy/import", {"paths": [str(ALLOYS)]}))
    run_ids = {r["runId"] for r in imported["imported"] if r["runId"]}
    assert run_ids, imported  # the executed fixture brings a run

    listed = ok(foundry.execute("forge/list-runs", {}))

    assert {r["runId"] for r in listed["runs"]} == run_ids
    for run in listed["runs"]:
        assert run["status"] == "completed" and run["artifactId"], run


def test_lineage_of_a_recipe_with_a_dangling_parent(foundry: Any) -> None:
    data = json.loads(EXAMPLE.read_text())
    missing = str(uuid.uuid4())
    child = ok(foundry.execute("data/create", {"collection": "forge_recipes",
                                               "data": {**data, "parentRecipeId": missing}}))["id"]

    report = ok(foundry.execute("lineage/report", {"id": child}))

    [parent] = report["parents"]
    assert parent["id"] == missing and parent["missing"] is True, parent
    assert "names no recipe" in parent["problem"]
    assert missing in render_markdown(report)


def _garble(app: Any, kind: str, originator_id: str, version: int) -> None:
    """Overwrite one stored event's state with bytes that are no JSON, in the table itself."""
    recorder = app.recorder
    with recorder.datastore.transaction(commit=True) as curs:
        if kind == "sqlite":
            curs.execute(f"UPDATE {recorder.events_table_name} SET state = ? "
                         "WHERE originator_id = ? AND originator_version = ?",
                         (b"{garbled", uuid.UUID(originator_id).hex, version))
            curs.execute("SELECT changes()")
            assert curs.fetchone()[0] == 1
        else:
            curs.execute(f'UPDATE "{recorder.datastore.schema}".{recorder.events_table_name} '
                         "SET state = %s WHERE originator_id = %s AND originator_version = %s",
                         (b"{garbled", uuid.UUID(originator_id), version))
            assert curs.rowcount == 1


def test_a_damaged_run_event_is_named_by_every_read(store_url: str, env: Path) -> None:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        run_id = ok(f.execute("alloy/import", {"paths": [str(EXECUTED)]}))["imported"][0]["runId"]
        _garble(f.runs, f.config.kind, run_id, 2)

    with Foundry.open(store_url) as f:  # fresh: nothing cached from before the damage
        for command, params in (("forge/status", {"runId": run_id}),
                                ("lineage/report", {"id": run_id})):
            result = f.execute(command, params)
            assert result["success"] is False, (command, result)
            assert result["errorCode"] == "event_damaged", (command, result)
            assert run_id in result["error"] and "event 2 " in result["error"], result
        replay = f.execute("audit/replay", {"runId": run_id})
        assert replay["success"] is False and replay["errorCode"] == "event_damaged", replay


def test_a_damaged_recipe_event_is_named(store_url: str, env: Path) -> None:
    from foundry.adapters.bootstrap import Foundry

    data = json.loads(EXAMPLE.read_text())
    with Foundry.open(store_url) as f:
        recipe_id = ok(f.execute("data/create", {"collection": "forge_recipes",
                                                 "data": data}))["id"]
        _garble(f.recipes, f.config.kind, recipe_id, 1)

    with Foundry.open(store_url) as f:
        result = f.execute("lineage/report", {"id": recipe_id})
        assert result["success"] is False and result["errorCode"] == "event_damaged", result
        assert recipe_id in result["error"] and "event 1 " in result["error"], result
        assert "garbled" not in result["error"]  # the damaged bytes are not repeated


def _set_state(app: Any, kind: str, originator_id: str, version: int,
               edit: Callable[[bytes], bytes]) -> None:
    recorder = app.recorder
    table = (recorder.events_table_name if kind == "sqlite"
             else f'"{recorder.datastore.schema}".{recorder.events_table_name}')
    key: Any = uuid.UUID(originator_id).hex if kind == "sqlite" else uuid.UUID(originator_id)
    mark = "?" if kind == "sqlite" else "%s"
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(f"SELECT state FROM {table} WHERE originator_id = {mark} "
                     f"AND originator_version = {mark}", (key, version))
        row = curs.fetchone()
        state = bytes(row[0] if kind == "sqlite" else row["state"])
        curs.execute(f"UPDATE {table} SET state = {mark} WHERE originator_id = {mark} "
                     f"AND originator_version = {mark}", (edit(state), key, version))


def test_audit_events_lists_every_damaged_row_and_nothing_else(store_url: str,
                                                               env: Path) -> None:
    """A garbled run event and a recipe event holding a NUL (what an unchecked import wrote)
    are both listed, by log, aggregate and version; the clean events are not."""
    from foundry.adapters.bootstrap import Foundry

    data = json.loads(EXAMPLE.read_text())
    name = data["name"].encode()
    with Foundry.open(store_url) as f:
        clean = ok(f.execute("audit/events", {}))
        assert clean["ok"] is True and clean["problems"] == [], clean
        recipe_id = ok(f.execute("data/create", {"collection": "forge_recipes",
                                                 "data": data}))["id"]
        run_id = ok(f.execute("alloy/import", {"paths": [str(EXECUTED)]}))["imported"][0]["runId"]
        _garble(f.runs, f.config.kind, run_id, 2)
        _set_state(f.recipes, f.config.kind, recipe_id, 1,
                   lambda s: s.replace(b'"' + name + b'"', b'"' + name + b'\\u0000"', 1))

    with Foundry.open(store_url) as f:
        audit = ok(f.execute("audit/events", {}))

    assert audit["ok"] is False and audit["problemCount"] == 2, audit
    found = {(p["log"], p["originatorId"], p["version"]): p["problem"] for p in audit["problems"]}
    assert set(found) == {("runs", run_id, 2), ("recipes", recipe_id, 1)}, found
    assert "cannot be decoded" in found[("runs", run_id, 2)]
    assert "NUL" in found[("recipes", recipe_id, 1)]
    assert audit["events"]["runs"] >= 2 and audit["events"]["recipes"] >= 2, audit
