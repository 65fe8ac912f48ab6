"""Run event streams (SSE) through a real server while the run executes in a worker process
the server spawned: read from the store, resumable with Last-Event-ID, ending after the
terminal event; and the all-runs stream a dashboard follows."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import drop_schema, pg_schema_url
from tests.e2e.test_http_commands import create
from tests.served import Served, serve, server_env

pytestmark = pytest.mark.slow  # a real server subprocess per module

Event = dict[str, Any]


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve-sse")
    env = server_env(work, FOUNDRY_FAKE_SLEEP="0.25")  # stages take time: a run is live
    if request.param == "sqlite":
        with serve(f"sqlite:///{work / 'foundry.db'}", work, env=env) as s:
            yield s
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with serve(pg_schema_url(schema), work, env=env) as s:
            yield s
    finally:
        drop_schema(schema)


def read_events(served: Served, path: str, *, last_id: str | None = None,
                stop_after: int | None = None, until: Any = None) -> tuple[list[Event], bool]:
    """Events of an SSE stream: (events, whether the server ended the stream)."""
    import json

    headers = {"Authorization": f"Bearer {served.tokens['read']}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    events: list[Event] = []
    current: Event = {}
    with httpx.stream("GET", f"{served.url}{path}", headers=headers,
                      timeout=httpx.Timeout(60, read=60)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}
                if stop_after is not None and len(events) >= stop_after:
                    return events, False
                if until is not None and until(events[-1]):
                    return events, False
    return events, True


def stored_events(served: Served, run_id: str) -> list[tuple[int, str]]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(served.db) as foundry:
        stored = foundry.runs.recorder.select_events(uuid.UUID(run_id))
        return [(s.originator_version, type(foundry.runs.mapper.to_domain_event(s)).__name__)
                for s in stored]


def detached_run(served: Served) -> str:
    rid = create(served)["id"]
    started = served.ok("forge/run", {"recipeId": rid, "wait": False}, token="run")
    assert started["detached"] is True and started["workerPid"]  # another process runs it
    return str(started["runId"])


def test_a_stream_resumed_from_last_event_id_loses_and_repeats_nothing(served: Served) -> None:
    run_id = detached_run(served)
    path = f"/v1/runs/{run_id}/events"
    first, ended = read_events(served, path, stop_after=3)
    assert not ended and [int(e["id"]) for e in first] == [1, 2, 3]
    live = served.ok("forge/status", {"runId": run_id}, token="read")["status"]
    assert live in ("requested", "running"), "the run must still be executing while we read"
    second, _ = read_events(served, path, last_id=first[-1]["id"], stop_after=2)
    rest, ended = read_events(served, path, last_id=second[-1]["id"])
    assert ended, "the stream must end after the terminal event"
    got = first + second + rest
    assert got[-1]["event"] == "Completed"
    assert [(int(e["id"]), e["event"]) for e in got] == stored_events(served, run_id)
    assert all(e["data"]["runId"] == run_id for e in got)
    assert got[0]["data"]["recipe"]["name"]  # the Requested event carries its fields


def test_a_stream_of_an_ended_run_replays_it_and_ends_and_resuming_at_its_end_sends_nothing(
        served: Served) -> None:
    rid = create(served)["id"]
    run_id = served.ok("forge/run", {"recipeId": rid}, token="run")["runId"]
    events, ended = read_events(served, f"/v1/runs/{run_id}/events")
    assert ended and [(int(e["id"]), e["event"]) for e in events] == stored_events(served,
                                                                                 run_id)
    after, ended = read_events(served, f"/v1/runs/{run_id}/events", last_id=events[-1]["id"])
    assert ended and after == []


def test_the_all_runs_stream_shows_each_state_change(served: Served) -> None:
    seen: list[Event] = []
    run_id: dict[str, str] = {}
    ready = threading.Event()

    def follow() -> None:
        from foundry.adapters.bootstrap import Foundry

        with Foundry.open(served.db) as foundry:  # from the current head: only new events
            head = foundry.runs.recorder.max_notification_id() or 0
        ready.set()
        events, _ = read_events(served, "/v1/runs/events", last_id=str(head), until=lambda e: (
            e["data"]["runId"] == run_id.get("id") and e["event"] == "Completed"))
        seen.extend(events)

    thread = threading.Thread(target=follow)
    thread.start()
    ready.wait(30)
    run_id["id"] = detached_run(served)
    thread.join(90)
    mine = [e for e in seen if e["data"]["runId"] == run_id["id"]]
    statuses = [e["data"]["status"] for e in mine if "status" in e["data"]]
    assert statuses[0] == "requested" and "running" in statuses and statuses[-1] == "completed"
    assert "recipe" not in mine[0]["data"]  # compact: no recipe bodies
    ids = [int(e["id"]) for e in seen]
    assert ids == sorted(set(ids))


def test_a_cancel_over_http_is_recorded_as_the_tokens_principal(served: Served) -> None:
    run_id = detached_run(served)
    cancelled = served.ok("forge/cancel", {"runId": run_id, "by": "mallory", "reason": "stop"},
                          token="run")
    assert cancelled["cancellation"] == {"by": served.names["run"], "reason": "stop"}
    events, ended = read_events(served, f"/v1/runs/{run_id}/events")
    assert ended and events[-1]["event"] == "Cancelled"


def test_a_stream_of_an_unknown_run_is_404_and_a_bad_last_event_id_is_400(
        served: Served) -> None:
    headers = {"Authorization": f"Bearer {served.tokens['read']}"}
    missing = httpx.get(f"{served.url}/v1/runs/{uuid.uuid4()}/events", headers=headers)
    assert missing.status_code == 404 and missing.json()["errorCode"] == "not_found"
    bad = httpx.get(f"{served.url}/v1/runs/{uuid.uuid4()}/events",
                    headers={**headers, "Last-Event-ID": "abc"})
    assert bad.status_code == 400
    assert httpx.get(f"{served.url}/v1/runs/{uuid.uuid4()}/events").status_code == 401
