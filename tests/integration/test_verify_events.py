"""`artifact/verify` of a stored run checks the run's events, not only what was derived from
them (#17): a run event rewritten by SQL after the view projected it is a failed `events` link
naming the field, as `audit replay` names it. Real stores, a real fake-executor run."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import ok

pytestmark = pytest.mark.usefixtures("forge_env")


def _events_link(result: dict[str, Any]) -> dict[str, Any]:
    [link] = [x for x in result["links"] if x["name"] == "events"]
    return link


def _rewrite(app: Any, kind: str, run_id: str, version: int, state: bytes) -> None:
    recorder = app.recorder
    table = (recorder.events_table_name if kind == "sqlite"
             else f'"{recorder.datastore.schema}".{recorder.events_table_name}')
    key: Any = uuid.UUID(run_id).hex if kind == "sqlite" else uuid.UUID(run_id)
    mark = "?" if kind == "sqlite" else "%s"
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(f"UPDATE {table} SET state = {mark} WHERE originator_id = {mark} "
                     f"AND originator_version = {mark}", (state, key, version))


def test_verify_names_the_field_of_a_tampered_run_event(store_url: str,
                                                        recipe: dict[str, Any]) -> None:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        recipe_id = ok(f.execute("data/create", {"collection": "forge_recipes",
                                                 "data": recipe}))["id"]
        run_id = ok(f.execute("forge/run", {"recipeId": recipe_id}))["runId"]
        clean = ok(f.execute("artifact/verify", {"subject": run_id}))
        assert clean["ok"] is True and _events_link(clean)["ok"] is True, clean

        stored = f.runs.recorder.select_events(uuid.UUID(run_id))
        target = [s for s in stored if s.topic.endswith(".StageCompleted")][-1]  # the eval
        body = json.loads(target.state)
        body["metrics"]["finalPerplexity"] = round(body["metrics"]["finalPerplexity"] / 2, 4)
        _rewrite(f.runs, f.config.kind, run_id, target.originator_version,
                 json.dumps(body, separators=(",", ":")).encode())

    with Foundry.open(store_url) as fresh:  # nothing cached from before the rewrite
        result = ok(fresh.execute("artifact/verify", {"subject": run_id}))

    link = _events_link(result)
    assert result["ok"] is False and link["ok"] is False and link["status"] == "BROKEN", result
    assert "results.finalPerplexity" in link["found"], link
    assert "alloyHash: sealed" in link["found"], link
