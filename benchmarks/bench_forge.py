"""Forge run benchmark (issue 3): what the orchestration adds on top of the stage executors.

A recipe of N near no-op stages (the deterministic fake executors with no sleep: each reads a
4 KiB model and writes it back transformed) runs twice per repeat:

1. through ``foundry.execute("forge/run", ...)`` (wait true): recipe pin, run request, source
   resolution into the blob store, then per stage StageStarted, one StageProgressed,
   StageCompleted (each a load of the run aggregate + one commit), every output stored in the
   content-addressed blob store (fsync'd), then benchmarks, gate, seal, completion;
2. directly: the same FakeExecutor objects called one after the other on the same input
   directories (``FakeExecutor.run(ctx, reporter)`` with a reporter that does nothing).

Per-stage overhead = (forge seconds - direct seconds) / N. Both paths must give the same stage
output hashes, or the benchmark stops: the inputs really are the same. It also times, inside
forge/run, the run-event writes (``ForgeRuns.record``: aggregate load + command + commit) and
the blob store (stores, checks and copies) by wrapping those methods, and probes the disk's
fsync and SQLite commit latency first: on a slow disk those set the floor.

    .venv/bin/python benchmarks/bench_forge.py                 # SQLite, 50 stages
    .venv/bin/python benchmarks/bench_forge.py --backend both --stages 50 200

It prints the machine, a table per backend and stage count, and a final JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import structlog

from foundry.adapters.bootstrap import Foundry
from foundry.adapters.store.blobs import hash_dir
from foundry.executors.base import StageContext
from foundry.executors.fake import build_fake_registry, resolve_fake_source

from _machine import fs_type, version
from _machine import machine_info as base_machine_info
from _timing import Timers

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("FOUNDRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"
TARGET_MS_PER_STAGE = 15.0  # on SQLite
STAGE_CYCLE: tuple[dict[str, Any], ...] = (
    {"type": "prune", "strategy": "magnitude", "level": 0.3},
    {"type": "train", "steps": 30, "learningRate": "3e-3"},
    {"type": "lora", "rank": 8, "alpha": 16},
    {"type": "context-extend", "targetLength": 8192, "method": "yarn"},
)


# --- machine ----------------------------------------------------------------------------------

def fsync_ms(directory: Path, n: int = 30) -> dict[str, float]:
    """Median latency of a 4 KiB write + fsync and of a SQLite WAL commit (synchronous=FULL,
    the library's default) in `directory`: the floor under every event and blob write."""
    d = Path(tempfile.mkdtemp(prefix="bench-fsync-", dir=directory))
    try:
        writes = []
        for i in range(n):
            t0 = time.perf_counter()
            with (d / f"f{i}").open("wb") as fh:
                fh.write(b"x" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            writes.append(time.perf_counter() - t0)
        conn = sqlite3.connect(d / "probe.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)")
        commits = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (b) VALUES (?)", (b"x" * 800,))
            conn.execute("COMMIT")
            commits.append(time.perf_counter() - t0)
        conn.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"file_fsync_ms": round(statistics.median(writes) * 1000, 2),
            "sqlite_commit_ms": round(statistics.median(commits) * 1000, 2)}


def machine_info(backends: list[str], tmp_parent: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        **base_machine_info(),
        "sqlite": sqlite3.sqlite_version,
        "eventsourcing": version("eventsourcing"),
        "psycopg": version("psycopg"),
        "tmp_fs": fs_type(tmp_parent),
        **fsync_ms(tmp_parent),
    }
    if "postgres" in backends:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            row = conn.execute("SELECT version()").fetchone()
            info["postgres"] = row[0].split(",")[0] if row else "?"
            for name in ("synchronous_commit", "fsync"):
                r = conn.execute(f"SHOW {name}").fetchone()
                info[f"pg_{name}"] = r[0] if r else "?"
    return info


def print_machine(info: dict[str, Any]) -> None:
    print("== Machine")
    for key, value in info.items():
        print(f"{key:<17} {value}")
    print()


# --- helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def instrumented(foundry: Foundry, timers: Timers) -> Iterator[None]:
    """Wrap run-event writes and blob-store calls of this run (instance attributes only; the
    BlobStore is rebuilt on each `foundry.blobs` access, so its class methods are wrapped and
    restored)."""
    from foundry.adapters.store.blobs import BlobStore

    # put_file is the bottom of every store (put_dir and extra outputs go through it).
    originals = {name: getattr(BlobStore, name) for name in ("put_file", "materialize",
                                                             "verify_records")}
    foundry.runs.record = timers.wrap("run events (load + command + commit)",  # type: ignore
                                      foundry.runs.record)
    for name, fn in originals.items():
        setattr(BlobStore, name, timers.wrap(f"blob store {name}", fn))
    try:
        yield
    finally:
        del foundry.runs.record
        for name, fn in originals.items():
            setattr(BlobStore, name, fn)


class NullReporter:
    def progress(self, fraction: float, message: str = "",  # noqa: ARG002 (the protocol)
                 metrics: Mapping[str, float] | None = None) -> None:  # noqa: ARG002
        return None


def bench_recipe(stages: int) -> dict[str, Any]:
    data = json.loads(EXAMPLE.read_text())
    data["name"] = f"bench-{stages}-stages"
    data["source"]["baseModel"] = "fake://bench"
    data["stages"] = [dict(STAGE_CYCLE[i % len(STAGE_CYCLE)]) for i in range(stages)]
    data["cycles"] = 1
    data["evaluationBenchmarks"] = []
    return data


@contextlib.contextmanager
def store(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    schema = f"bench_forge_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{PG_SERVER}?schema={schema}"
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def direct(recipe: dict[str, Any], registry: Any, work: Path) -> tuple[float, list[str]]:
    """Call each executor on the previous stage's output; (seconds, output hashes)."""
    shutil.rmtree(work, ignore_errors=True)
    base = resolve_fake_source(recipe["source"])
    current, hashes = base, []
    t0 = time.perf_counter()
    for index, stage in enumerate(recipe["stages"]):
        out, scratch = work / f"c1-s{index}", work / f"c1-s{index}.scratch"
        out.mkdir(parents=True)
        scratch.mkdir(parents=True)
        ctx = StageContext(run_id="direct", cycle=1, index=index, stage=stage, recipe=recipe,
                           input_dir=current, output_dir=out, work_dir=scratch,
                           base_model_dir=base)
        result = registry.get(stage["type"]).run(ctx, NullReporter())
        current = result.output_dir
    seconds = time.perf_counter() - t0
    for index in range(len(recipe["stages"])):
        hashes.append(hash_dir(work / f"c1-s{index}"))
    return seconds, hashes


def run_case(backend: str, stages: int, repeats: int, tmp_parent: Path) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-forge-{backend}-", dir=tmp_parent))
    os.environ["FOUNDRY_STATE_DIR"] = str(tmp / "state")
    os.environ["FOUNDRY_FAKE_MODELS"] = str(tmp / "fake-models")
    registry = build_fake_registry(sleep_seconds=0.0)
    forge_s: list[float] = []
    direct_s: list[float] = []
    forge_cpu: list[float] = []
    direct_cpus: list[float] = []
    events: list[int] = []
    breakdown: dict[str, float] = {}
    try:
        with store(backend, tmp) as url, Foundry.open(url) as foundry:
            foundry.use_registry(registry)
            made = foundry.execute("data/create", {"collection": "forge_recipes",
                                                   "data": bench_recipe(stages)})
            assert made["success"], made
            recipe = foundry.execute("data/read", {"collection": "forge_recipes",
                                                   "id": made["id"]})["data"]
            for attempt in range(repeats + 1):  # the first is a warm-up
                timers = Timers()
                with instrumented(foundry, timers):
                    t0, c0 = time.perf_counter(), time.process_time()
                    result = foundry.execute("forge/run", {"recipeId": made["id"]})
                    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
                if not result["success"] or result["status"] != "completed":
                    raise SystemExit(f"forge/run did not complete: {result}")
                c0 = time.process_time()
                seconds, hashes = direct(recipe, registry, tmp / "direct")
                direct_cpu = time.process_time() - c0  # includes hashing the outputs
                forged = [s["outputHash"] for s in result["stages"]]
                if forged != hashes:
                    raise SystemExit("forge/run and the direct calls disagree on outputs")
                if attempt == 0:
                    continue
                forge_s.append(elapsed)
                direct_s.append(seconds)
                forge_cpu.append(cpu)
                direct_cpus.append(direct_cpu)
                events.append(len(foundry.runs.recorder.select_events(
                    uuid.UUID(result["runId"]), limit=100_000)))
                for name, value in timers.seconds.items():
                    breakdown[name] = breakdown.get(name, 0.0) + value / repeats
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    forge_med, direct_med = statistics.median(forge_s), statistics.median(direct_s)
    n_events = int(statistics.median(events))
    return {
        "backend": backend, "stages": stages, "repeats": repeats,
        "forge_s": round(forge_med, 4), "direct_s": round(direct_med, 4),
        "events": n_events, "events_per_s": round(n_events / forge_med, 1),
        "overhead_ms_per_stage": round((forge_med - direct_med) / stages * 1000, 2),
        # CPU time of this process: far less sensitive to other load on the machine than
        # wall time, blind to fsync waits and to the PostgreSQL server's own work.
        "forge_cpu_ms_per_stage": round(statistics.median(forge_cpu) / stages * 1000, 2),
        "direct_cpu_ms_per_stage": round(statistics.median(direct_cpus) / stages * 1000, 2),
        "forge_runs_s": [round(x, 4) for x in forge_s],
        "breakdown_ms_per_stage": {k: round(v / stages * 1000, 2)
                                   for k, v in sorted(breakdown.items())},
    }


def print_case(r: dict[str, Any]) -> None:
    verdict = ""
    if r["backend"] == "sqlite":
        ok = r["overhead_ms_per_stage"] < TARGET_MS_PER_STAGE
        verdict = f"  (target < {TARGET_MS_PER_STAGE:g} ms: {'met' if ok else 'MISSED'})"
    print(f"== {r['backend']}, {r['stages']} stages, median of {r['repeats']}")
    print(f"forge/run                {r['forge_s'] * 1000:9.1f} ms   runs: "
          f"{', '.join(f'{x * 1000:.0f}' for x in r['forge_runs_s'])} ms")
    print(f"executors called direct  {r['direct_s'] * 1000:9.1f} ms")
    print(f"run events written       {r['events']:9d}      {r['events_per_s']:.0f} events/s, "
          f"{r['events'] / r['stages']:.1f} per stage")
    print(f"overhead per stage       {r['overhead_ms_per_stage']:9.2f} ms{verdict}")
    print(f"process CPU per stage    {r['forge_cpu_ms_per_stage']:9.2f} ms forge/run, "
          f"{r['direct_cpu_ms_per_stage']:.2f} ms direct (incl. hashing its outputs)")
    for name, ms in r["breakdown_ms_per_stage"].items():
        print(f"  {name:<38} {ms:7.2f} ms/stage")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    p.add_argument("--stages", type=int, nargs="+", default=[50])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tmpdir", default=None, help="parent of the tmp dirs (state, SQLite)")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    tmp_parent = Path(args.tmpdir or tempfile.gettempdir())
    info = machine_info(backends, tmp_parent)
    print_machine(info)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n", flush=True)
    results = []
    for backend in backends:
        for n in args.stages:
            r = run_case(backend, n, args.repeats, tmp_parent)
            print_case(r)
            results.append(r)
    print(json.dumps({"bench": "forge", "machine": info, "args": vars(args),
                      "results": results}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
