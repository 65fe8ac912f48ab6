"""Runs dispatched by Ray to labelled nodes, on one machine: a `ray.cluster_utils.Cluster` with
a head that offers no CPUs and two worker nodes of different classes, PostgreSQL on 127.0.0.1,
fake executors (no torch). One cluster for the module (starting one costs ~10 s); one
PostgreSQL schema, state dir and dispatcher per test.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import ray  # the ray extra: scripts/setup.sh installs it, so these tests never skip
from ray.cluster_utils import Cluster

from foundry.adapters.fleet.placement import worker_labels, worker_resources
from tests.conftest import ROOT, drop_schema, ok, pg_schema_url, run_events, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

R = "forge_recipes"
CLASS_A, SITE_A = "cls-a", "site-1"
CLASS_B, SITE_B = "cls-b", "site-2"
STAGES = ["prune", "train", "quant"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Nodes inherit this process's environment: nothing test-specific may leak into them
    # (each test's settings travel with its dispatcher's tasks instead).
    saved = {k: os.environ.pop(k) for k in list(os.environ)
             if k.startswith("FOUNDRY_") or k == "RAY_ADDRESS"}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for node_class, site in ((CLASS_A, SITE_A), (CLASS_B, SITE_B)):
        c.add_node(num_cpus=1, resources=worker_resources(0, None),
                   labels=worker_labels(node_class, site))
    ray.init(address=c.address, namespace="foundry-tests", log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        os.environ.update(saved)


@pytest.fixture
def store(cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    schema = f"t_{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv("FOUNDRY_DISPATCHER", "ray")
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    with Foundry.open(pg_schema_url(schema), state_dir=tmp_path / "state") as foundry:
        yield foundry
    drop_schema(schema)


def task_env(tmp_path: Path, sleep: float = 0.0) -> dict[str, str]:
    # FOUNDRY_SIGNING: a task signs only with a key a test made, never creating one in the
    # user's config dir (the nodes do not inherit this process's FOUNDRY_* settings).
    return {"FOUNDRY_EXECUTORS": "fake", "FOUNDRY_FAKE_SLEEP": str(sleep),
            "FOUNDRY_FAKE_MODELS": str(tmp_path / "fake-models"),
            "FOUNDRY_SIGNING": "existing"}


class DispatcherThread:
    """The reconciler in a thread of this process (the test process is the Ray driver)."""

    def __init__(self, foundry: Any, env: dict[str, str], **options: Any) -> None:
        from foundry.adapters.fleet.ray_dispatch import Reconciler

        self.reconciler = Reconciler(foundry, poll_seconds=0.1, lease_wait_seconds=30,
                                     task_env=env, **options)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.reconciler.run_forever, args=(self.stop,),
                                       daemon=True)

    def __enter__(self) -> DispatcherThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for tracked in self.reconciler.runs.values():  # leave no task behind for the next test
            if tracked.ref is not None:
                ray.cancel(tracked.ref, force=True)


def recipe(recipe_data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    data["cycles"] = 1
    data["stages"] = [s for s in data["stages"] if s["type"] in STAGES]
    # Without its eval stage, the example's evaluationBenchmarks would add an implied one.
    data.pop("evaluationBenchmarks", None)
    assert [s["type"] for s in data["stages"]] == STAGES
    return data


def request(foundry: Any, data: dict[str, Any], node: str) -> str:
    data = {**data, "name": f"{data['name']}-{uuid.uuid4().hex[:8]}"}  # live names are unique
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    started = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "hardwareNode": node,
                                               "wait": False}))
    assert started["dispatcher"] == "ray" and started["detached"] is True
    return str(started["runId"])


def status(foundry: Any, run_id: str) -> dict[str, Any]:
    return ok(foundry.execute("forge/status", {"runId": run_id}))


def named(evs: list[Any], name: str) -> list[Any]:
    return [e for e in evs if type(e).__name__ == name]


def ended(foundry: Any, run_id: str) -> str | None:
    s = status(foundry, run_id)["status"]
    return s if s in ("completed", "failed", "cancelled") else None


def running_stage(foundry: Any, run_id: str, index: int) -> bool:
    return any(s["index"] == index and s["status"] == "running"
               for s in status(foundry, run_id)["stages"])


def assert_each_stage_completed_once(evs: list[Any]) -> None:
    completions = Counter((e.cycle, e.index) for e in named(evs, "StageCompleted"))
    assert completions == Counter({(1, i): 1 for i in range(len(STAGES))}), completions


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# --- placement ---------------------------------------------------------------------------

def test_a_run_for_class_b_lands_on_a_class_b_node(store, recipe_data, tmp_path):
    with DispatcherThread(store, task_env(tmp_path)):
        run_id = request(store, recipe(recipe_data), f"{CLASS_B}@any")
        assert wait_for(lambda: ended(store, run_id), 60, "the run to end") == "completed"
    evs = run_events(store, run_id)
    [dispatched] = named(evs, "Dispatched")
    assert dispatched.label_selector == {"foundry.class": CLASS_B}
    assert dispatched.resources == {"foundry.slot": 1.0}
    [started] = named(evs, "Started")
    assert started.node["class"] == CLASS_B and started.node["site"] == SITE_B
    alive_b = [n["NodeID"] for n in ray.nodes()
               if n["Alive"] and n.get("Labels", {}).get("foundry.class") == CLASS_B]
    assert started.node["rayNodeId"] in alive_b
    assert_each_stage_completed_once(evs)
    artifact = ok(store.execute("forge/status", {"runId": run_id}))
    assert artifact["alloyHash"].startswith("sha256:")


def test_forge_run_that_waits_follows_the_run_to_its_end_with_progress(
        store, recipe_data, tmp_path):
    seen: list[tuple[str, int]] = []
    recipe_id = ok(store.execute("data/create", {"collection": R,
                                                 "data": recipe(recipe_data)}))["id"]
    with DispatcherThread(store, task_env(tmp_path, sleep=0.3)):
        done = ok(store.execute("forge/run", {"recipeId": recipe_id, "hardwareNode": "any"},
                                progress=lambda e: seen.append((e["kind"], e.get("index", -1)))))
    assert done["status"] == "completed" and done["dispatcher"] == "ray"
    assert done["alloyHash"].startswith("sha256:") and "detached" not in done
    assert seen[0][0] == "run_waiting"  # requested, then submitted: the display says so
    assert [e for e in seen if e[0] in ("stage_started", "stage_completed")] == [
        (kind, i) for i in range(len(STAGES)) for kind in ("stage_started", "stage_completed")]


def test_the_cli_forge_run_under_ray_shows_why_it_waits_and_each_stage(
        store, recipe_data, tmp_path):
    recipe_id = ok(store.execute("data/create", {"collection": R,
                                                 "data": recipe(recipe_data)}))["id"]
    with DispatcherThread(store, task_env(tmp_path, sleep=0.3)):
        cli = subprocess.run(
            [sys.executable, "-m", "foundry.adapters.cli.main", "--db", store.config.url, "forge",
             "run", recipe_id, "--node", f"{CLASS_B}@any"], cwd=ROOT, capture_output=True,
            text=True, timeout=120, env={**os.environ, "FOUNDRY_DISPATCHER": "ray"})
    assert cli.returncode == 0, cli.stderr
    out = cli.stdout + cli.stderr
    assert "[foundry] waiting: " in out
    for i in range(len(STAGES)):
        assert f"cycle 1 stage {i}" in out and "completed in" in out


def test_two_runs_for_one_single_slot_node_run_one_after_the_other(
        store, recipe_data, tmp_path):
    with DispatcherThread(store, task_env(tmp_path, sleep=0.3)):
        first = request(store, recipe(recipe_data), f"{CLASS_A}@{SITE_A}")
        second = request(store, recipe(recipe_data), f"{CLASS_A}@{SITE_A}")
        for run_id in (first, second):
            assert wait_for(lambda r=run_id: ended(store, r), 90, "both runs") == "completed"
    spans = []
    for run_id in (first, second):
        evs = run_events(store, run_id)
        assert named(evs, "Started")[0].node["class"] == CLASS_A
        spans.append((named(evs, "Started")[0].at, named(evs, "Completed")[0].at))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"the runs overlapped on one slot: {spans}"


def test_a_run_no_worker_can_take_stays_queued_and_status_says_why(
        store, recipe_data, tmp_path):
    with DispatcherThread(store, task_env(tmp_path)):
        run_id = request(store, recipe(recipe_data), "h100@lab-9")
        waiting = wait_for(lambda: status(store, run_id).get("waiting", "").startswith("queued")
                           and status(store, run_id)["waiting"], 30, "the queue reason")
        time.sleep(1.0)  # several reconciler steps: still queued, recorded once
        assert status(store, run_id)["status"] == "requested"
    assert "no live worker offers h100@lab-9" in waiting
    assert f"{CLASS_A}@{SITE_A}" in waiting and f"{CLASS_B}@{SITE_B}" in waiting
    assert "foundry worker --class h100 --site lab-9" in waiting
    evs = run_events(store, run_id)
    assert len(named(evs, "Queued")) == 1 and not named(evs, "Dispatched")


# --- failures ------------------------------------------------------------------------------

def test_a_run_that_cannot_be_submitted_holds_up_no_other_and_is_given_up(
        store, recipe_data, tmp_path):
    from foundry.adapters.clock import utc_now
    from foundry.domain.hashing import content_hash

    data = recipe(recipe_data)
    # A hardwareNode from before the grammar was tightened: stored, but no longer parsable.
    bad = store.runs.request_run(
        uuid.uuid4(), recipe_id=str(uuid.uuid4()), recipe_version="0.1.0", recipe_revision=1,
        recipe_hash=content_hash(data), recipe=data, hardware_node="gpu-", publish_target=None,
        requested_by="", command_id=None, at=utc_now())[0]
    with DispatcherThread(store, task_env(tmp_path), max_resubmits=1):
        good = request(store, data, "any")
        assert wait_for(lambda: ended(store, good), 60, "the good run") == "completed"
        assert wait_for(lambda: ended(store, str(bad.id)), 30, "the bad run") == "failed"
    failure = status(store, str(bad.id))["failure"]
    assert failure["type"] == "DispatchError" and "hardwareNode 'gpu-'" in failure["message"]


def test_an_imported_run_is_never_dispatched(store, tmp_path):
    from foundry.adapters.publishing.alloy_io import import_alloy
    from tests.alloy_corpus import EXECUTED_FIXTURE

    path = EXECUTED_FIXTURE
    with DispatcherThread(store, task_env(tmp_path)) as dispatcher:
        run_id = import_alloy(store, path)["runId"]
        time.sleep(1.0)
        assert not dispatcher.reconciler.runs
    assert not named(run_events(store, run_id), "Dispatched")
    assert not named(run_events(store, run_id), "Queued")

def test_a_killed_worker_process_is_retried_by_ray_and_the_run_resumes(
        store, recipe_data, tmp_path):
    with DispatcherThread(store, task_env(tmp_path, sleep=1.2)):
        run_id = request(store, recipe(recipe_data), f"{CLASS_A}@any")
        wait_for(lambda: running_stage(store, run_id, 1), 60, "the second stage to run")
        first_pid = named(run_events(store, run_id), "Started")[0].pid
        kill(first_pid)
        assert wait_for(lambda: ended(store, run_id), 90, "the run to end") == "completed"
    evs = run_events(store, run_id)
    attempts = named(evs, "Started")
    assert len(attempts) == 2 and attempts[1].pid != first_pid
    assert len(named(evs, "Dispatched")) == 1  # Ray's retry, not a re-submission
    assert_each_stage_completed_once(evs)
    assert len(named(evs, "StageStarted")) == len(STAGES) + 1  # stage 1 started twice


def test_two_attempts_on_two_nodes_at_once_execute_the_run_once(store, recipe_data, tmp_path):
    """A stale task and a re-submission alive together (a node thought lost comes back, say):
    the run lease lets one execute; the other waits, then finds the run ended and leaves."""
    from foundry.adapters.fleet.ray_dispatch import _remote_execute_run

    run_id = request(store, recipe(recipe_data), "any")  # no dispatcher: submitted by hand
    refs = [_remote_execute_run.options(
        num_cpus=0, resources={"foundry.slot": 1}, label_selector={"foundry.class": cls},
        runtime_env={"env_vars": task_env(tmp_path, sleep=0.6)}, max_retries=0,
    ).remote(store.config.url_without_password, run_id, str(store.state_dir), 60.0)
        for cls in (CLASS_A, CLASS_B)]
    results = ray.get(refs, timeout=120)
    assert sorted(r["status"] for r in results) == ["completed", "completed"]
    assert len({r["nodeId"] for r in results}) == 2  # really on two nodes
    evs = run_events(store, run_id)
    assert len(named(evs, "Started")) == 1
    assert_each_stage_completed_once(evs)


def _dispatcher_process(store: Any, tmp_path: Path, env: dict[str, str],
                        address: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / "dispatcher.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "foundry.adapters.cli.main", "--db", store.config.url,
         "--log-level", "INFO", "dispatcher", "--address", address, "--poll", "0.1",
         "--lease-wait", "30"],
        cwd=ROOT, stdout=log, stderr=log,
        env={**os.environ, **env, "FOUNDRY_STATE_DIR": str(store.state_dir)})


def test_a_killed_dispatcher_restarted_completes_the_run_with_no_duplicate(
        cluster, store, recipe_data, tmp_path):
    env = task_env(tmp_path, sleep=1.2)
    run_id = request(store, recipe(recipe_data), f"{CLASS_B}@{SITE_B}")
    first = _dispatcher_process(store, tmp_path, env, cluster.address)
    try:
        wait_for(lambda: running_stage(store, run_id, 1), 90, "the second stage to run")
        first.kill()
        first.wait(10)
        second = _dispatcher_process(store, tmp_path, env, cluster.address)
        try:
            assert wait_for(lambda: ended(store, run_id), 120, "the run to end") == "completed"
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
    finally:
        if first.poll() is None:
            first.kill()
    evs = run_events(store, run_id)
    assert len(named(evs, "Dispatched")) == 2
    assert len(named(evs, "Started")) == 2
    assert_each_stage_completed_once(evs)
    assert len(named(evs, "Completed")) == 1


def test_cancel_stops_a_running_stage_and_it_is_not_retried(store, recipe_data, tmp_path):
    with DispatcherThread(store, task_env(tmp_path, sleep=6.0)) as dispatcher:
        run_id = request(store, recipe(recipe_data), f"{CLASS_A}@any")
        wait_for(lambda: running_stage(store, run_id, 0), 60, "the first stage to run")
        pid = named(run_events(store, run_id), "Started")[0].pid
        ok(store.execute("forge/cancel", {"runId": run_id, "reason": "wrong data", "by": "ana"}))
        wait_for(lambda: not _alive(pid), 20, "the worker process to be stopped")
        time.sleep(2.0)  # time for a retry, were there one
        assert UUID(run_id) not in dispatcher.reconciler.runs
    evs = run_events(store, run_id)
    names = [type(e).__name__ for e in evs]
    assert names[-1] == "Cancelled" and status(store, run_id)["status"] == "cancelled"
    assert len(named(evs, "Started")) == 1 and not named(evs, "StageCompleted")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# --- the worker wrapper --------------------------------------------------------------------

def test_foundry_worker_joins_with_its_labels_and_takes_runs_for_its_class(
        cluster, store, recipe_data, tmp_path):
    log = (tmp_path / "worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "foundry.adapters.cli.main", "worker", "--class", "cls-c",
         "--site", "desk", "--address", cluster.address, "--num-cpus", "1", "--num-gpus", "0"],
        cwd=ROOT, stdout=log, stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_")},
        start_new_session=True)
    try:
        node = wait_for(lambda: [n for n in ray.nodes() if n["Alive"]
                                 and n.get("Labels", {}).get("foundry.class") == "cls-c"],
                        60, "the worker node to join")[0]
        assert node["Labels"]["foundry.site"] == "desk"
        assert node["Resources"]["foundry.slot"] == 1.0
        with DispatcherThread(store, task_env(tmp_path)):
            run_id = request(store, recipe(recipe_data), "cls-c@desk")
            assert wait_for(lambda: ended(store, run_id), 60, "the run") == "completed"
        started = named(run_events(store, run_id), "Started")[0]
        assert started.node == {"rayNodeId": node["NodeID"], "class": "cls-c", "site": "desk"}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    wait_for(lambda: not [n for n in ray.nodes() if n["Alive"]
                          and n.get("Labels", {}).get("foundry.class") == "cls-c"],
             60, "the worker node to leave")
