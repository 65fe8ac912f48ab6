"""Run dispatch benchmark (issue 6): request-to-stage latency and runs per minute, in-process
against Ray.

A recipe of three no-op stages (examples/tiny-recipe.json trimmed to prune, train, quant on
``fake://tiny``; the fake executors with FOUNDRY_FAKE_SLEEP=0) is run N times:

1. in-process: ``forge/run`` with ``wait: true``, one run after the other, in this process
   (FOUNDRY_DISPATCHER=in-process). One warm-up run first, not counted. With --detached,
   also N runs with ``wait: false`` requested at once: a worker process each, all at once.
2. Ray: a local ``ray.cluster_utils.Cluster`` (a head with no CPUs, two worker nodes with one
   ``foundry.slot`` each, labelled cls-a@site-1 and cls-b@site-2) and the reconciler of
   ``foundry dispatcher`` (adapters/ray_dispatch.py) in a thread of this process, with its
   own Foundry (its own connections), once per ``--poll`` interval. First (once) two runs
   at once on the fresh cluster: each node starts its Ray worker process; reported as the
   cold start and not counted elsewhere. Then five runs one at a time on an idle cluster
   (dispatch overhead without queueing), then N runs requested at once (``hardwareNode:
   any``, ``wait: false``): two execute at a time, the rest queue.

Latency of a run = its first StageStarted.at - its Requested.at (both recorded in the run's
events, on one clock). It is split with the events in between: Dispatched (recorded by the
reconciler right after ``.remote()``), Started (the orchestrator, after Foundry.open and the
run lease in the task) and SourceResolved. With tracing (the default) the reconciler's Ray
task is wrapped to write the moment it entered the worker and the moment its imports were
done to ``<state>/bench-trace/<run id>``, which splits Dispatched -> Started into Ray
(scheduling, worker start with the runtime_env) and the task itself (imports, Foundry.open,
lease). Runs per minute = N / (last Completed.at - first Requested.at).

    .venv/bin/python benchmarks/bench_dispatch.py                      # 20 runs, poll 0.1 0.5
    .venv/bin/python benchmarks/bench_dispatch.py --runs 40 --poll 0.1 --json

PostgreSQL (FOUNDRY_BENCH_PG, default the server on 127.0.0.1): one fresh schema, dropped at
the end; a temp state dir, removed at the end. It prints the machine, one table per case and,
with --json, a final JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import structlog

from foundry.adapters.bootstrap import Foundry

from _machine import load_1min, loadavg, version
from _machine import machine_info as base_machine_info

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("FOUNDRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"
STAGES = ("prune", "train", "quant")
NODES = (("cls-a", "site-1"), ("cls-b", "site-2"))
SINGLE_RUNS = 5
CONTENTION_LOAD = 1.5
TRACE_DIR = "bench-trace"
R = "forge_recipes"


# --- helpers ----------------------------------------------------------------------------------

def bench_recipe() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    data["name"] = "bench-dispatch"
    data["source"]["baseModel"] = "fake://tiny"
    data["cycles"] = 1
    data["stages"] = [s for s in data["stages"] if s["type"] in STAGES]
    assert tuple(s["type"] for s in data["stages"]) == STAGES
    return data


def ok(result: dict[str, Any]) -> dict[str, Any]:
    if not result.get("success"):
        raise SystemExit(f"command failed: {result}")
    return result


def ts(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def timeline(foundry: Foundry, run_id: str, state_dir: Path) -> dict[str, float | None]:
    """Epoch seconds of each step of one run (the first of each kind of event)."""
    stored = foundry.runs.recorder.select_events(UUID(run_id), limit=100_000)
    firsts: dict[str, float] = {}
    for s in stored:
        event = foundry.runs.mapper.to_domain_event(s)
        name = type(event).__name__
        if name not in firsts and hasattr(event, "at"):
            firsts[name] = ts(event.at)
    t: dict[str, float | None] = {
        "requested": firsts.get("Requested"), "dispatched": firsts.get("Dispatched"),
        "started": firsts.get("Started"), "source": firsts.get("SourceResolved"),
        "stage": firsts.get("StageStarted"), "completed": firsts.get("Completed"),
        "task_entered": None, "task_imported": None, "pid": None,
    }
    trace = state_dir / TRACE_DIR / run_id
    if trace.is_file():  # the first attempt's line
        entered, imported, pid = trace.read_text().splitlines()[0].split()
        t["task_entered"], t["task_imported"] = float(entered), float(imported)
        t["pid"] = float(pid)
    return t


def gaps_ms(timelines: list[dict[str, float | None]], a: str, b: str) -> list[float]:
    return [(t[b] - t[a]) * 1000 for t in timelines  # type: ignore[operator]
            if t[a] is not None and t[b] is not None]


SPLITS = (  # (label, from, to): the pieces of the latency, where both events exist
    ("request -> Dispatched (reconciler poll, placement)", "requested", "dispatched"),
    ("Dispatched -> task entered (Ray: schedule, worker)", "dispatched", "task_entered"),
    ("task entered -> imports done", "task_entered", "task_imported"),
    ("imports -> Started (Foundry.open, lease, record)", "task_imported", "started"),
    ("Dispatched -> Started (all of the task start)", "dispatched", "started"),
    ("request -> Started", "requested", "started"),
    ("Started -> SourceResolved", "started", "source"),
    ("SourceResolved -> first StageStarted", "source", "stage"),
    ("first StageStarted -> Completed (3 stages, seal)", "stage", "completed"),
    ("task entered -> Completed (the slot held)", "task_entered", "completed"),
)


def handoffs_ms(timelines: list[dict[str, float | None]]) -> list[float]:
    """Per Ray worker process: a run's Completed -> the next run's task entered (the slot
    idle between two runs, while there were runs waiting for it)."""
    by_pid: dict[float, list[tuple[float, float]]] = {}
    for t in timelines:
        if t["pid"] is not None and t["completed"] is not None:
            span = (t["task_entered"], t["completed"])
            by_pid.setdefault(t["pid"], []).append(span)  # type: ignore[arg-type]
    gaps = []
    for spans in by_pid.values():
        spans.sort()
        gaps += [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(spans)]
    return gaps


def summarize(timelines: list[dict[str, float | None]], *, queued: bool = False
              ) -> dict[str, Any]:
    """Latency percentiles, runs per minute and the splits; `queued`: runs waited for a
    slot, so the gaps between one run and the next on a worker mean something."""
    latency = gaps_ms(timelines, "requested", "stage")
    first_request = min(t["requested"] for t in timelines)  # type: ignore[type-var]
    last_completed = max(t["completed"] for t in timelines)  # type: ignore[type-var]
    span = last_completed - first_request  # type: ignore[operator]
    splits = {}
    for label, a, b in SPLITS:
        values = gaps_ms(timelines, a, b)
        if values:
            splits[label] = {"p50": round(statistics.median(values), 1),
                             "max": round(max(values), 1)}
    handoffs = handoffs_ms(timelines) if queued else []
    if handoffs:
        splits["Completed -> next task entered, same worker"] = {
            "p50": round(statistics.median(handoffs), 1), "max": round(max(handoffs), 1)}
    return {
        "runs": len(timelines),
        "latency_ms": [round(x, 1) for x in latency],
        "p50_ms": round(statistics.median(latency), 1),
        "p95_ms": round(percentile(latency, 0.95), 1),
        "max_ms": round(max(latency), 1),
        "span_s": round(span, 3),
        "runs_per_min": round(len(timelines) / span * 60, 1),
        "splits_ms": splits,
    }


def wait_ended(foundry: Foundry, run_ids: list[str], timeout: float) -> None:
    """Until every run ended; one query of the notification log each 0.1 s (polling each
    run's aggregate would load the CPUs the runs need)."""
    from foundry.domain.forge_run import ForgeRun

    topics = (ForgeRun.Completed.TOPIC, ForgeRun.Failed.TOPIC, ForgeRun.Cancelled.TOPIC)
    recorder = foundry.runs.recorder
    pending = set(run_ids)
    position = 0
    deadline = time.monotonic() + timeout
    while True:
        notes = recorder.select_notifications(start=position + 1, limit=1000, topics=topics)
        for note in notes:
            position = note.id
            run_id = str(note.originator_id)
            if run_id in pending:
                if note.topic != ForgeRun.Completed.TOPIC:
                    raise SystemExit(f"run {run_id} did not complete: {note.topic}")
                pending.discard(run_id)
        if not pending:
            return
        if len(notes) == 1000:
            continue
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s: {len(pending)} runs not ended")
        time.sleep(0.1)


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    schema = f"bench_dispatch_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{PG_SERVER}?schema={schema}"
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def fake_env(tmp: Path) -> dict[str, str]:
    return {"FOUNDRY_EXECUTORS": "fake", "FOUNDRY_FAKE_SLEEP": "0",
            "FOUNDRY_FAKE_MODELS": str(tmp / "fake-models"),
            "FOUNDRY_KEYS_DIR": str(tmp / "keys")}  # no key there: runs are not signed


# --- in-process -------------------------------------------------------------------------------

def bench_in_process(url: str, tmp: Path, runs: int) -> dict[str, Any]:
    os.environ.update({**fake_env(tmp), "FOUNDRY_DISPATCHER": "in-process"})
    state = tmp / "state"
    with Foundry.open(url, state_dir=state) as foundry:
        recipe_id = ok(foundry.execute("data/create", {"collection": R,
                                                       "data": bench_recipe()}))["id"]
        ok(foundry.execute("forge/run", {"recipeId": recipe_id}))  # warm-up: lazy imports
        run_ids = []
        t0 = time.perf_counter()
        for _ in range(runs):
            result = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "wait": True}))
            if result["status"] != "completed" or result["dispatcher"] != "in-process":
                raise SystemExit(f"unexpected result: {result}")
            run_ids.append(str(result["runId"]))
        wall = time.perf_counter() - t0
        timelines = [timeline(foundry, r, state) for r in run_ids]
    summary = summarize(timelines)
    summary["wall_s"] = round(wall, 3)
    return summary


def bench_detached(url: str, tmp: Path, runs: int) -> dict[str, Any]:
    """In-process with `wait: false`: N runs requested at once, each in its own detached
    worker process on this machine (`python -m foundry.adapters.cli.worker`), all at the
    same time."""
    os.environ.update({**fake_env(tmp), "FOUNDRY_DISPATCHER": "in-process"})
    state = tmp / "state"
    with Foundry.open(url, state_dir=state) as foundry:
        recipe_id = ok(foundry.execute("data/create", {"collection": R,
                                                       "data": bench_recipe()}))["id"]
        t0 = time.perf_counter()
        run_ids = [str(ok(foundry.execute("forge/run", {"recipeId": recipe_id,
                                                        "wait": False}))["runId"])
                   for _ in range(runs)]
        requested_s = time.perf_counter() - t0
        wait_ended(foundry, run_ids, 60 + 10 * runs)
        wall = time.perf_counter() - t0
        timelines = [timeline(foundry, r, state) for r in run_ids]
    return {**summarize(timelines), "wall_s": round(wall, 3),
            "request_all_s": round(requested_s, 3)}


# --- Ray --------------------------------------------------------------------------------------

def traced_execute_run(database_url: str, run_id: str, state_dir: str,
                       lease_wait_seconds: float) -> dict[str, Any]:
    """foundry.adapters.fleet.ray_dispatch.execute_run, noting when the task entered its worker
    and when its imports were done (pickled by value: this module is not importable on the
    nodes)."""
    entered = time.time()
    import foundry.adapters.bootstrap  # noqa: F401 - what execute_run imports first, timed here
    from foundry.adapters.fleet.ray_dispatch import execute_run

    imported = time.time()
    trace = Path(state_dir) / TRACE_DIR
    trace.mkdir(parents=True, exist_ok=True)
    with (trace / run_id).open("a") as f:
        f.write(f"{entered:.6f} {imported:.6f} {os.getpid()}\n")
    return execute_run(database_url, run_id, state_dir, lease_wait_seconds)


class Dispatcher:
    """The reconciler in a thread of this process, on its own Foundry (own connections)."""

    def __init__(self, url: str, state: Path, poll: float, env: dict[str, str]) -> None:
        from foundry.adapters.fleet.ray_dispatch import Reconciler

        self.foundry = Foundry.open(url, state_dir=state)
        self.reconciler = Reconciler(self.foundry, poll_seconds=poll, lease_wait_seconds=30,
                                     task_env=env)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.reconciler.run_forever, args=(self.stop,),
                                       daemon=True)

    def __enter__(self) -> Dispatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        self.stop.set()
        self.thread.join(10)
        for tracked in self.reconciler.runs.values():
            if tracked.ref is not None:
                ray.cancel(tracked.ref, force=True)
        self.foundry.close()


def start_cluster() -> tuple[Any, float]:
    """Two labelled one-slot worker nodes and a head with no CPUs. The nodes inherit this
    process's environment, so no FOUNDRY_* setting may be in it: the tasks get theirs from
    the dispatcher's runtime_env, as on a fleet."""
    import ray
    from ray.cluster_utils import Cluster

    from foundry.adapters.fleet.placement import worker_labels, worker_resources

    for key in [k for k in os.environ if k.startswith("FOUNDRY_") or k == "RAY_ADDRESS"]:
        del os.environ[key]
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for node_class, site in NODES:
        cluster.add_node(num_cpus=1, resources=worker_resources(0, None),
                         labels=worker_labels(node_class, site))
    ray.init(address=cluster.address, namespace="foundry-bench", log_to_driver=False,
             logging_level=logging.WARNING)
    return cluster, time.perf_counter() - t0


def request(foundry: Foundry, recipe_id: str) -> str:
    started = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "hardwareNode": "any",
                                               "wait": False}))
    if started["dispatcher"] != "ray" or started["detached"] is not True:
        raise SystemExit(f"not dispatched by ray: {started}")
    return str(started["runId"])


def bench_ray(url: str, tmp: Path, runs: int, polls: list[float],
              trace: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import ray

    import foundry.adapters.fleet.ray_dispatch as ray_dispatch

    cluster, startup = start_cluster()
    env = fake_env(tmp)
    os.environ.update({**env, "FOUNDRY_DISPATCHER": "ray"})  # this process: the driver
    if trace:
        ray_dispatch._remote_execute_run = ray.remote(traced_execute_run)
    state = tmp / "state"
    results = []
    workers: set[int] = set()
    cold: dict[str, Any] = {}
    rng = random.Random(6)
    try:
        with Foundry.open(url, state_dir=state) as foundry:
            recipe_id = ok(foundry.execute("data/create", {"collection": R,
                                                           "data": bench_recipe()}))["id"]
            for poll in polls:
                with Dispatcher(url, state, poll, env):
                    if not cold:
                        # Two runs at once, one per node: each node starts its Ray worker
                        # process (with the runtime_env) and imports Foundry. Not counted
                        # below, so every case finds both workers warm.
                        first = [request(foundry, recipe_id) for _ in NODES]
                        wait_ended(foundry, first, 120)
                        cold = summarize([timeline(foundry, r, state) for r in first])
                        workers |= {int(e.pid) for r in first for e in _started(foundry, r)}
                        time.sleep(poll + 0.3)
                    singles = []
                    for _ in range(SINGLE_RUNS):
                        run_id = request(foundry, recipe_id)
                        wait_ended(foundry, [run_id], 120)
                        singles.append(run_id)
                        # Idle again once the reconciler collected the task; a random
                        # pause so the request falls anywhere in the reconciler's poll.
                        time.sleep(poll + 0.3 + rng.uniform(0, poll))
                    t0 = time.perf_counter()
                    batch = [request(foundry, recipe_id) for _ in range(runs)]
                    requested_s = time.perf_counter() - t0
                    wait_ended(foundry, batch, 60 + 30 * runs)
                    wall = time.perf_counter() - t0
                single_tl = [timeline(foundry, r, state) for r in singles]
                batch_tl = [timeline(foundry, r, state) for r in batch]
                pids = {int(e.pid) for r in singles + batch for e in _started(foundry, r)}
                new_workers = len(pids - workers)
                workers |= pids
                single = summarize(single_tl)
                single["one_at_a_time"] = True
                results.append({
                    "poll_s": poll, "single": single,
                    "batch": {**summarize(batch_tl, queued=True), "wall_s": round(wall, 3),
                              "request_all_s": round(requested_s, 3)},
                    "worker_processes": len(pids), "new_worker_processes": new_workers,
                })
    finally:
        ray.shutdown()
        cluster.shutdown()
    return results, {"cluster_start_s": round(startup, 1), "traced": trace,
                     "cold_start": cold}


def _started(foundry: Foundry, run_id: str) -> list[Any]:
    stored = foundry.runs.recorder.select_events(UUID(run_id), limit=100_000)
    return [e for e in (foundry.runs.mapper.to_domain_event(s) for s in stored)
            if type(e).__name__ == "Started"]


# --- output -----------------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {**base_machine_info(), "ray": version("ray"),
                            "eventsourcing": version("eventsourcing")}
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        row = conn.execute("SELECT version()").fetchone()
        info["postgres"] = row[0].split(",")[0] if row else "?"
    return info


def print_summary(title: str, s: dict[str, Any]) -> None:
    print(f"-- {title}: {s['runs']} runs")
    print(f"   latency request -> first stage started   p50 {s['p50_ms']:8.1f} ms   "
          f"p95 {s['p95_ms']:8.1f} ms   max {s['max_ms']:8.1f} ms")
    if s.get("one_at_a_time") or s["runs"] <= SINGLE_RUNS:
        print(f"   each (ms): {', '.join(f'{x:.0f}' for x in s['latency_ms'])}")
    if not s.get("one_at_a_time"):  # one at a time, with pauses: no throughput
        print(f"   throughput {s['runs_per_min']:8.1f} runs/min   (first request -> last "
              f"completed {s['span_s']:.2f} s)")
    for label, v in s["splits_ms"].items():
        print(f"     {label:<52} p50 {v['p50']:8.1f} ms   max {v['max']:8.1f} ms")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="runs per batch (default 20)")
    p.add_argument("--poll", type=float, nargs="+", default=[0.1, 0.5],
                   help="reconciler poll intervals in seconds (default 0.1 0.5)")
    p.add_argument("--no-trace", dest="trace", action="store_false",
                   help="submit the reconciler's own task unwrapped (no task-entry times)")
    p.add_argument("--detached", action="store_true",
                   help="also in-process with wait=false: one worker process per run, all "
                        "requested at once")
    p.add_argument("--skip-ray", action="store_true", help="the in-process baseline only")
    p.add_argument("--json", action="store_true", help="end with one JSON line of everything")
    p.add_argument("--tmpdir", default=None, help="parent of the temp state dir")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    info = machine_info()
    contended = (load_1min() or 0.0) > CONTENTION_LOAD
    print("== Machine")
    for key, value in info.items():
        print(f"{key:<17} {value}")
    if contended:
        print(f"NOTE: 1-minute load above {CONTENTION_LOAD}: figures taken under contention")
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}\n", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-", dir=args.tmpdir))
    saved = dict(os.environ)
    try:
        with pg_schema() as url:
            inproc = bench_in_process(url, tmp, args.runs)
            print("== in-process (forge/run wait=true, one after the other)")
            print_summary("batch", inproc)
            detached: dict[str, Any] | None = None
            if args.detached:
                detached = bench_detached(url, tmp, args.runs)
                print("== in-process detached (forge/run wait=false: a worker process each)")
                print_summary(f"{args.runs} requested at once (requests took "
                              f"{detached['request_all_s']:.2f} s)", detached)
            ray_results: list[dict[str, Any]] = []
            ray_info: dict[str, Any] = {}
            if not args.skip_ray:
                ray_results, ray_info = bench_ray(url, tmp, args.runs, args.poll, args.trace)
                print(f"== Ray (2 worker nodes x 1 slot; cluster start "
                      f"{ray_info['cluster_start_s']} s; task tracing "
                      f"{'on' if args.trace else 'off'})")
                print_summary("cold start: 2 runs at once on fresh workers, not counted "
                              "below", ray_info["cold_start"])
                for r in ray_results:
                    print(f"- reconciler poll {r['poll_s']:g} s; Ray worker processes used "
                          f"{r['worker_processes']} ({r['new_worker_processes']} new)")
                    print_summary("idle cluster, one at a time",
                                  r["single"])
                    print_summary(f"{args.runs} requested at once (requests took "
                                  f"{r['batch']['request_all_s']:.2f} s)", r["batch"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
    # The end figure counts this benchmark's own processes (Ray's, the workers): only the
    # start says whether other work competed.
    info["loadavg_at_end"] = loadavg()
    info["under_contention"] = contended
    print(f"loadavg at start  {info['loadavg_at_start']}"
          + ("   (under contention)" if contended else ""))
    print(f"loadavg at end    {info['loadavg_at_end']}   (includes this benchmark's load)")
    if args.json:
        print(json.dumps({"bench": "dispatch", "machine": info, "args": vars(args),
                          "in_process": inproc, "in_process_detached": detached,
                          "ray": ray_results, "ray_info": ray_info},
                         separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
