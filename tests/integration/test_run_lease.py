"""The run lease and the dispatcher choice, on SQLite and PostgreSQL (no Ray needed here)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from foundry.adapters.clock import utc_now
from foundry.adapters.runs.launch import ClusterDispatcher, InProcessDispatcher
from foundry.adapters.store.lease import RunLease
from tests.conftest import ROOT, ok

R = "forge_recipes"


@pytest.fixture
def foundry(store_url: str, forge_env: Path) -> Any:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        yield f


def requested_run(foundry: Any, recipe_data: dict[str, Any],
                  monkeypatch: pytest.MonkeyPatch) -> str:
    """A run that is requested and not executed: what forge/run records under Ray."""
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    # What FOUNDRY_DISPATCHER=ray gives a Foundry opened after it is set.
    foundry.use_launcher(ClusterDispatcher())
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "hardwareNode": "any",
                                              "wait": False}))
    assert result["status"] == "requested" and result["dispatcher"] == "ray"
    return str(result["runId"])


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from uuid import UUID
    from foundry.adapters.store.config import parse_database_url
    from foundry.adapters.store.lease import RunLease
    lease = RunLease(parse_database_url(sys.argv[1]), Path(sys.argv[2]), UUID(sys.argv[3]))
    assert lease.acquire(10)
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_lease_is_exclusive_and_freed_when_its_holder_is_killed(foundry, tmp_path):
    run_id = uuid4()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, foundry.config.url, str(foundry.state_dir), str(run_id)],
        cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with RunLease(foundry.config, foundry.state_dir, run_id) as lease:
            started = time.monotonic()
            assert not lease.acquire(0.5)
            assert time.monotonic() - started >= 0.5  # it waited, then left
            with RunLease(foundry.config, foundry.state_dir, uuid4()) as other:
                assert other.acquire(0)  # another run's lease is independent
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)
            assert lease.acquire(10) and lease.held
        with RunLease(foundry.config, foundry.state_dir, run_id) as again:
            assert again.acquire(0)  # released on exit
    finally:
        if holder.poll() is None:
            holder.kill()


def test_an_in_process_run_refuses_while_another_attempt_holds_its_lease(
        foundry, recipe_data, monkeypatch):
    run_id = requested_run(foundry, recipe_data, monkeypatch)
    foundry.use_launcher(InProcessDispatcher(lease_wait_seconds=0.5))
    with RunLease(foundry.config, foundry.state_dir, UUID(run_id)) as lease:
        assert lease.acquire(0)
        refused = foundry.execute("forge/resume", {"runId": run_id})
        assert not refused["success"]
        assert "another attempt holds the run's lease" in refused["error"]
        assert foundry.runs.get_run(UUID(run_id)).state["attempts"] == []
    done = ok(foundry.execute("forge/resume", {"runId": run_id}))
    assert done["status"] == "completed" and done["dispatcher"] == "in-process"


def test_status_says_why_a_requested_run_waits(foundry, recipe_data, monkeypatch):
    run_id = requested_run(foundry, recipe_data, monkeypatch)
    status = ok(foundry.execute("forge/status", {"runId": run_id}))
    assert "not submitted yet" in status["waiting"] and "foundry dispatcher" in status["waiting"]

    reason = "no live worker offers h100@any"
    assert foundry.runs.record(UUID(run_id), lambda r: r.queue(reason=reason, at=utc_now()))
    assert not foundry.runs.record(UUID(run_id), lambda r: r.queue(reason=reason,
                                                                     at=utc_now()))
    status = ok(foundry.execute("forge/status", {"runId": run_id}))
    assert status["waiting"].startswith("queued since ") and reason in status["waiting"]

    foundry.runs.record(UUID(run_id), lambda r: r.dispatch(
        dispatcher="dispatcher@head:1", label_selector={"foundry.class": "h100"},
        resources={"foundry.slot": 1.0}, at=utc_now()))
    status = ok(foundry.execute("forge/status", {"runId": run_id}))
    assert status["waiting"].startswith("submitted by dispatcher@head:1 at ")
    assert "foundry.class=h100" in status["waiting"] and status["dispatches"] == 1
    run = foundry.runs.get_run(UUID(run_id))
    assert run.state["queue"] is None and len(run.state["dispatches"]) == 1

    ok(foundry.execute("forge/cancel", {"runId": run_id}))
    assert "waiting" not in ok(foundry.execute("forge/status", {"runId": run_id}))
    from foundry.domain.errors import RunEndedError

    with pytest.raises(RunEndedError):
        foundry.runs.record(UUID(run_id), lambda r: r.queue(reason="x", at=utc_now()))


def test_an_unknown_dispatcher_is_named_in_the_error(foundry, recipe_data, monkeypatch):
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    monkeypatch.setenv("FOUNDRY_DISPATCHER", "celery")  # read once, when a Foundry opens
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(foundry.config.url, state_dir=foundry.state_dir) as celery:
        result = celery.execute("forge/run", {"recipeId": recipe_id})
    assert not result["success"]
    assert "FOUNDRY_DISPATCHER" in str(result["error"])
    assert "unknown dispatcher 'celery'; known: in-process, ray" in str(result["error"])


def test_the_dispatcher_gives_a_run_up_after_repeated_failed_tasks(
        foundry, recipe_data, monkeypatch):
    from foundry.adapters.fleet import ray_dispatch
    run_id = UUID(requested_run(foundry, recipe_data, monkeypatch))
    reconciler = ray_dispatch.Reconciler(foundry, max_resubmits=3, task_env={})
    reconciler._read_events()  # no Ray call: only the store
    tracked = reconciler.runs[run_id]
    assert tracked.hardware_node == "any" and not tracked.ended
    for waits in (1, 2, 3):  # never given up for a lease held elsewhere; backing off
        before = time.monotonic()
        reconciler._retry_later(tracked, "lease-held-elsewhere", count=False)
        assert tracked.failures == 0 and tracked.lease_waits == waits
        assert tracked.not_before >= before + 2 ** waits
    assert run_id in reconciler.runs
    for n in (1, 2):
        reconciler._retry_later(tracked, f"WorkerCrashedError: crash {n}", count=True)
        assert tracked.failures == n and run_id in reconciler.runs
    reconciler._retry_later(tracked, "NodeDiedError: node 3 lost", count=True)
    assert run_id not in reconciler.runs
    failure = foundry.runs.get_run(run_id).state["failure"]
    assert failure == {"type": "DispatchError", "message": "the dispatcher gave up after 3 "
                       "tasks; last: NodeDiedError: node 3 lost"}
    reconciler._read_events()  # the Failed event: not tracked again
    assert run_id not in reconciler.runs


@pytest.mark.postgres
def test_workers_open_the_store_without_creating_tables(tmp_path):
    """A Ray task opens the store with create_tables=False: tables come from `foundry db init`
    only, never from racing workers; before it, the error says what to run."""
    import psycopg

    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.errors import StoreUnavailableError
    from tests.conftest import PG_SERVER, drop_schema, pg_schema_url

    schema = f"t_{uuid4().hex[:16]}"
    url = pg_schema_url(schema)
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def tables() -> int:
        with psycopg.connect(PG_SERVER) as conn:
            row = conn.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = %s", (schema,)).fetchone()
        return int(row[0]) if row else 0

    try:
        with pytest.raises(StoreUnavailableError, match="run `foundry db init` once"):
            Foundry.open(url, state_dir=tmp_path, create_tables=False)
        assert tables() == 0
        init = subprocess.run(
            [sys.executable, "-m", "foundry.adapters.cli.main", "--db", url, "db", "init"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert init.returncode == 0, init.stderr
        created = tables()
        assert created >= 6
        with Foundry.open(url, state_dir=tmp_path, create_tables=False) as worker:
            assert ok(worker.execute("data/count", {"collection": R}))["count"] == 0
        assert tables() == created
    finally:
        drop_schema(schema)
