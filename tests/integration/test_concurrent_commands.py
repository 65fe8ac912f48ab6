"""One Foundry serves two callers at once: nothing serialises commands (no process-wide lock);
the store keeps them apart. On SQLite and PostgreSQL, with the fake executors sleeping in each
stage so that a run takes long enough to be overlapped."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from foundry.executors.fake import build_fake_registry
from tests.conftest import ok

R = "forge_recipes"
# Each of the 5 stages sleeps this long: a run takes about 1.5 s of sleeping alone.
STAGE_SLEEP = 0.3


@pytest.fixture
def foundry(store_url: str, forge_env: Path) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        f.use_registry(build_fake_registry(sleep_seconds=STAGE_SLEEP))
        yield f


def test_two_forge_runs_that_wait_run_at_the_same_time_on_one_foundry(foundry, recipe_data):
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    seen: dict[str, list[tuple[float, str]]] = {"a": [], "b": []}
    results: dict[str, dict[str, Any]] = {}
    both_started = threading.Barrier(2)

    def call(name: str) -> None:
        def progress(event: dict[str, Any]) -> None:
            seen[name].append((time.monotonic(), event["kind"]))

        both_started.wait()
        results[name] = foundry.execute("forge/run", {"recipeId": recipe_id, "wait": True},
                                        progress=progress)

    threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - started

    for name in ("a", "b"):
        assert ok(results[name])["status"] == "completed", results[name]
        assert results[name]["alloyHash"].startswith("sha256:")
    assert results["a"]["runId"] != results["b"]["runId"]
    # Each call's listener saw only its own run: 5 stages started and completed.
    for name in ("a", "b"):
        kinds = [k for _, k in seen[name]]
        assert kinds.count("stage_started") == 5 and kinds.count("stage_completed") == 5
    # Overlap, from the events themselves: each run started a stage before the other
    # completed its last one. Under a lock around commands, one run would start only after
    # the other had ended.
    first = {n: min(t for t, k in seen[n] if k == "stage_started") for n in seen}
    last = {n: max(t for t, k in seen[n] if k == "stage_completed") for n in seen}
    assert first["a"] < last["b"] and first["b"] < last["a"], (first, last)
    # And at some instant a stage of each was running: the executors themselves overlapped.
    spans = {n: _stage_spans(seen[n]) for n in seen}
    assert any(a0 < b1 and b0 < a1 for a0, a1 in spans["a"] for b0, b1 in spans["b"]), \
        (spans, elapsed)


def _stage_spans(events: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """(started, completed) times of each stage, from one call's progress events in order."""
    starts = [t for t, k in events if k == "stage_started"]
    ends = [t for t, k in events if k == "stage_completed"]
    return list(zip(starts, ends, strict=True))


def test_a_read_is_answered_while_a_forge_run_is_executing(foundry, recipe_data):
    """A data/list during a running forge/run answers at once, not after the run."""
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    stage_running = threading.Event()
    done: dict[str, Any] = {}

    def progress(event: dict[str, Any]) -> None:
        if event["kind"] == "stage_started":
            stage_running.set()

    def run() -> None:
        done["run"] = foundry.execute("forge/run", {"recipeId": recipe_id, "wait": True},
                                      progress=progress)
        done["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    assert stage_running.wait(30), "the run never started a stage"
    listed = ok(foundry.execute("data/list", {"collection": R}))
    answered = time.monotonic()
    thread.join(timeout=120)
    assert ok(done["run"])["status"] == "completed"
    assert listed["count"] == 1
    assert answered < done["ended"] - STAGE_SLEEP, "the read waited for the run to end"


def test_two_threads_resuming_one_run_execute_it_once(foundry, recipe_data):
    """Without a lock around commands, the run lease is what keeps two calls in one process
    from executing the same run: one executes it, the other is refused."""
    from uuid import UUID

    from foundry.adapters.runs.launch import ClusterDispatcher, InProcessDispatcher

    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    foundry.use_launcher(ClusterDispatcher())  # only records the request
    run_id = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "wait": False}))["runId"]
    foundry.use_launcher(InProcessDispatcher(lease_wait_seconds=0.2))
    results: list[dict[str, Any]] = []
    both_started = threading.Barrier(2)

    def resume() -> None:
        both_started.wait()
        results.append(foundry.execute("forge/resume", {"runId": run_id}))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done = [r for r in results if r["success"]]
    refused = [r for r in results if not r["success"]]
    assert len(done) == 1 and done[0]["status"] == "completed", results
    assert len(refused) == 1 and refused[0]["errorCode"] == "illegal_transition", results
    # Refused by the lease, by the live owner it sees (the first had recorded its start), or,
    # on a loaded machine that ran the first to its end before the second looked, because
    # the run has ended: never by executing it again.
    assert any(why in refused[0]["error"] for why in (
        "another attempt holds the run's lease", "is still running it",
        "the run is completed")), refused
    state = foundry.runs.get_run(UUID(run_id)).state
    assert len(state["attempts"]) == 1  # executed once


def test_a_progress_listener_that_raises_does_not_fail_the_run(foundry, recipe_data):
    from structlog.testing import capture_logs

    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]

    def broken(_event: dict[str, Any]) -> None:
        raise BrokenPipeError("the terminal went away")

    with capture_logs() as logs:
        run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}, progress=broken))
    assert run["status"] == "completed", run
    assert any(e["event"] == "progress_listener_failed" for e in logs)
