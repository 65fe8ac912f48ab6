"""Recipe store benchmark (issue 2): edits, projection rebuild and data/list latency.

For each backend (SQLite in a fresh tmp dir, PostgreSQL in a fresh schema that is dropped at
the end) this measures:

1. ``data/update`` edits per second through ``foundry.execute`` (single process, sequential,
   each edit changes ``description``), end to end: validation, aggregate load, one commit of
   events, command record and view row, and the answer built from the row written. It is
   compared with raw driver inserts (sqlite3 / psycopg) of the very same stored event bytes
   into a plain table with the same ``(id, version)`` primary key, one transaction per insert,
   same durability, run in rounds alternating with the edits (``--rounds``); the goal is
   data/update >= 0.8x raw.
2. Projection rebuild events per second over a store of ``--recipes`` recipes
   (``foundry.recipe_host.rebuild()``).
3. ``data/list`` latency (p50/p95) over those recipes at limit 100: a promoted-column filter
   with orderBy, a JSON-path filter with orderBy, and page 3 reached with the cursor.

It prints the machine and versions first, a table per backend, and a final JSON line.
``--only rebuild`` seeds and measures the rebuild alone (no edits, no list calls).

    .venv/bin/python benchmarks/bench_recipes.py --quick
    .venv/bin/python benchmarks/bench_recipes.py --backend both --recipes 100000 --edits 2000
    .venv/bin/python benchmarks/bench_recipes.py --only rebuild --rebuild-repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import structlog

from foundry.adapters.bootstrap import Foundry
from foundry.adapters.commands.data import validate_recipe
from foundry.domain.recipe import Recipe

from _machine import fs_type, loadavg, version
from _machine import machine_info as base_machine_info
from _timing import Timers

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("FOUNDRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"
COLLECTION = "forge_recipes"
N_TAGS = 20  # each recipe carries 2 of t0..t19: a tag filter matches about 10% of recipes
TAGS_PER_RECIPE = 2
EDIT_TARGETS = 100  # edits go round-robin over this many recipes (see the docs)
EDIT_GOAL = 0.8  # data/update at >= 0.8x raw durable inserts of the same bytes (issue 10)
SEED_BATCH = 1000  # aggregates per save() call when seeding
LIST_WARMUP = 20


# --- machine --------------------------------------------------------------------------------


def machine_info(backends: list[str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        **base_machine_info(),
        "sqlite": sqlite3.sqlite_version,
        "eventsourcing": version("eventsourcing"),
        "psycopg": version("psycopg"),
        "psycopg_impl": psycopg.pq.__impl__,
        "libpq": psycopg.pq.version(),
        "pydantic": version("pydantic"),
    }
    if "postgres" in backends:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            row = conn.execute("SELECT version()").fetchone()
            info["postgres"] = row[0].split(",")[0] if row else "?"
            for name in ("synchronous_commit", "fsync", "shared_buffers", "work_mem"):
                r = conn.execute(f"SHOW {name}").fetchone()
                info[f"pg_{name}"] = r[0] if r else "?"
    return info


def print_machine(info: dict[str, Any]) -> None:
    print("== Machine")
    print(f"date            {info['date']}")
    print(f"nproc           {info['nproc']}   cpu: {info['cpu']}   RAM: {info['ram_gib']} GiB")
    print(f"kernel          {info['kernel']}   load average {info['loadavg_at_start']}")
    print(f"python          {info['python']}   sqlite {info['sqlite']}")
    print(f"eventsourcing   {info['eventsourcing']}   psycopg {info['psycopg']} "
          f"({info['psycopg_impl']}, libpq {info['libpq']})   pydantic {info['pydantic']}")
    if "postgres" in info:
        print(f"postgres        {info['postgres']}   synchronous_commit="
              f"{info['pg_synchronous_commit']} fsync={info['pg_fsync']} "
              f"shared_buffers={info['pg_shared_buffers']} work_mem={info['pg_work_mem']}")
    print()


# --- helpers ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@contextlib.contextmanager
def instrumented(foundry: Foundry, timers: Timers) -> Iterator[None]:
    """Time the main stages of a command by wrapping bound methods on the instances only.

    No project code changes: instance attributes shadow the class methods for this run.
    """
    targets = [
        ("aggregate load (get_recipe)", foundry.recipes, "get_recipe"),
        ("event-store commit (save)", foundry.recipes, "save"),
        ("view catch-up (read log + fold + commit)", foundry.recipe_host, "catch_up"),
        ("view read (fetch)", foundry.recipe_view, "fetch"),
    ]
    for name, obj, attr in targets:
        setattr(obj, attr, timers.wrap(name, getattr(obj, attr)))
    try:
        yield
    finally:
        for _, obj, attr in targets:
            with contextlib.suppress(AttributeError):
                delattr(obj, attr)


# --- store setup ----------------------------------------------------------------------------


class Store:
    """A fresh store for one backend; `cleanup()` removes every trace of it."""

    def __init__(self, backend: str, tmp_root: str | None) -> None:
        self.backend = backend
        self.tmpdir: Path | None = None
        self.schema = ""
        if backend == "sqlite":
            self.tmpdir = Path(tempfile.mkdtemp(prefix="foundry-bench-", dir=tmp_root))
            self.url = f"sqlite:///{self.tmpdir / 'foundry.db'}"
        else:
            self.schema = f"bench_{uuid.uuid4().hex[:12]}"
            self.url = f"{PG_SERVER}?schema={self.schema}"

    @property
    def where(self) -> str:
        if self.tmpdir is not None:
            return f"{self.tmpdir}  [{fs_type(self.tmpdir)}]"
        return f"schema {self.schema} on {PG_SERVER}"

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self.schema:
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def base_recipe() -> dict[str, Any]:
    return validate_recipe(json.loads(EXAMPLE.read_text()))


def seed(foundry: Foundry, n: int, n_authors: int, rng: random.Random) -> tuple[list[str], float]:
    """Create `n` recipes, SEED_BATCH aggregates per save(); returns their ids and seconds."""
    base = base_recipe()
    tags = [f"t{i}" for i in range(N_TAGS)]
    ids: list[str] = []
    started = time.perf_counter()
    batch: list[Recipe] = []
    for i in range(n):
        rid = uuid.UUID(int=rng.getrandbits(128), version=4)
        data = {
            **base,
            "id": str(rid),
            "name": f"recipe-{i:06d}",
            "author": f"author-{i % n_authors}",
            "tags": sorted(rng.sample(tags, TAGS_PER_RECIPE)),
            "description": f"Seeded recipe {i}.",
        }
        batch.append(Recipe.create(id=rid, data=data, author=data["author"], command_id=None))
        ids.append(str(rid))
        if len(batch) >= SEED_BATCH:
            foundry.recipes.save(*batch)
            batch = []
    if batch:
        foundry.recipes.save(*batch)
    return ids, time.perf_counter() - started


def durability(foundry: Foundry) -> str:
    """The event store's commit durability, as the library's own connection sees it."""
    recorder: Any = foundry.recipes.recorder
    with recorder.datastore.transaction(commit=False) as c:
        if foundry.config.kind == "sqlite":
            c.execute("PRAGMA journal_mode")
            journal = c.fetchone()[0]
            c.execute("PRAGMA synchronous")
            return f"journal_mode={journal} synchronous={c.fetchone()[0]}"
        c.execute("SHOW synchronous_commit")
        return f"synchronous_commit={next(iter(c.fetchone().values()))}"


# --- 1. edits ---------------------------------------------------------------------------------


def bench_edits(
    store: Store, foundry: Foundry, ids: list[str], n_edits: int, rounds: int,
    rng: random.Random, profile: Path | None,
) -> dict[str, Any]:
    """data/update edits and raw inserts of the same bytes, in alternating rounds.

    The disk's fsync time wanders by several times within a minute on a shared VM (1 to 6 ms
    measured on this machine), so the edits and their baseline run interleaved: round k does
    n/rounds edits, then inserts exactly the stored bytes of those edits with the bare driver.
    Both totals then cover the same stretches of time, and their ratio is the signal.
    """
    targets = rng.sample(ids, min(EDIT_TARGETS, len(ids)))
    warmup = min(20, max(1, n_edits // 10))
    raw = RawInserter(store, foundry)

    def edit(k: int) -> None:
        rid = targets[k % len(targets)]
        res = foundry.execute("data/update", {
            "collection": COLLECTION, "id": rid, "author": "bench", "reason": "bench",
            "data": {"description": f"Edited by the benchmark, edit {k}."},
        })
        if not res.get("success") or not res.get("changes"):
            raise RuntimeError(f"data/update failed: {res}")

    for k in range(warmup):
        edit(k)
    timers = Timers()
    latencies: list[float] = []
    payloads: list[tuple[Any, ...]] = []
    total = raw_total = cpu = 0.0
    profiler = cProfile.Profile() if profile else None
    per_round = [n_edits // rounds + (1 if r < n_edits % rounds else 0) for r in range(rounds)]
    inline = getattr(foundry.recipe_host, "inline", None)  # None: a tree without it
    inline_before = inline.applied if inline else 0
    k = warmup
    with instrumented(foundry, timers):
        for n in per_round:
            head = foundry.recipes.recorder.max_notification_id() or 0
            if profiler:
                profiler.enable()
            started, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                edit(k)
                latencies.append(time.perf_counter() - t0)
                k += 1
            total += time.perf_counter() - started
            cpu += time.process_time() - cpu0
            if profiler:
                profiler.disable()
            # The exact bytes the library stored for these edits, for the raw baseline.
            notes = foundry.recipes.recorder.select_notifications(
                start=head, limit=n + 10, inclusive_of_start=False)
            round_payloads = [(x.originator_id, x.originator_version, x.topic, x.state)
                              for x in notes]
            assert len(round_payloads) == n, (len(round_payloads), n)
            raw_total += raw.insert(round_payloads)
            payloads += round_payloads
    raw.close()
    if profiler and profile:
        profiler.dump_stats(str(profile))

    breakdown = {
        name: {"ms_per_edit": 1000 * s / n_edits, "calls_per_edit": timers.calls[name] / n_edits}
        for name, s in timers.seconds.items()
    }
    accounted = sum(timers.seconds.values())
    breakdown["rest (validation, diff, dispatch)"] = {
        "ms_per_edit": 1000 * (total - accounted) / n_edits, "calls_per_edit": 0.0,
    }
    per_s, raw_per_s = n_edits / total, len(payloads) / raw_total
    return {
        "edits": n_edits, "targets": len(targets), "warmup": warmup, "rounds": rounds,
        "seconds": total, "per_s": per_s,
        "raw_seconds": raw_total, "raw_per_s": raw_per_s,
        "edit_over_raw": per_s / raw_per_s, "raw_over_lib": raw_per_s / per_s,
        "client_cpu_ms_per_edit": 1000 * cpu / n_edits,
        "p50_ms": 1000 * pct(latencies, 50), "p95_ms": 1000 * pct(latencies, 95),
        "breakdown": breakdown,
        "view_rows_in_edit_transaction": (inline.applied - inline_before) if inline else 0,
        "payload_bytes_mean": statistics.mean(len(p[3]) for p in payloads),
    }


class RawInserter:
    """The baseline: the same stored bytes inserted with the bare driver into a plain table
    with the same (id, version) primary key, one transaction (one durable commit) each, with
    the event store's own durability settings."""

    def __init__(self, store: Store, foundry: Foundry) -> None:
        self.store = store
        if store.backend == "sqlite":
            assert store.tmpdir is not None
            recorder: Any = foundry.recipes.recorder
            with recorder.datastore.transaction(commit=False) as c:
                c.execute("PRAGMA synchronous")
                synchronous = int(c.fetchone()[0])
            self.lite = sqlite3.connect(store.tmpdir / "raw.db", isolation_level=None)
            self.lite.execute("PRAGMA journal_mode=WAL")
            self.lite.execute(f"PRAGMA synchronous={synchronous}")
            self.lite.execute(
                "CREATE TABLE raw_events (id TEXT, version INTEGER, topic TEXT, state BLOB, "
                "PRIMARY KEY (id, version))")
            return
        self.pg = psycopg.connect(PG_SERVER)
        self.table = f'"{store.schema}".raw_events'
        self.pg.execute(
            f"CREATE TABLE {self.table} (id uuid NOT NULL, version bigint NOT NULL, "
            "topic text, state bytea, PRIMARY KEY (id, version))")
        self.pg.commit()

    def insert(self, payloads: list[tuple[Any, ...]]) -> float:
        """Seconds to insert `payloads`, one transaction each."""
        if self.store.backend == "sqlite":
            rows = [(i.hex, v, t, s) for i, v, t, s in payloads]
            started = time.perf_counter()
            for row in rows:
                self.lite.execute("BEGIN")
                self.lite.execute("INSERT INTO raw_events VALUES (?, ?, ?, ?)", row)
                self.lite.execute("COMMIT")
            return time.perf_counter() - started
        sql = f"INSERT INTO {self.table} VALUES (%s, %s, %s, %s)"
        started = time.perf_counter()
        for row in payloads:
            self.pg.execute(sql, row)
            self.pg.commit()
        return time.perf_counter() - started

    def close(self) -> None:
        if self.store.backend == "sqlite":
            self.lite.close()
        else:
            self.pg.close()


# --- 2. rebuild -------------------------------------------------------------------------------


def bench_rebuild(foundry: Foundry, repeats: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    recorder: Any = foundry.recipes.recorder
    view: Any = foundry.recipe_view
    for _ in range(repeats):
        timers = Timers()
        # The bulk path (view.rebuild: read + decode + fold + write + indexes + commit, one
        # transaction) or, for a view without one, reset + catch-up page by page. Only the
        # parts that ran are listed.
        wrapped = [
            (recorder, "select_notifications", "read log (catch-up)"),
            (view, "apply_batch", "view apply (fold + write + commit)"),
            (view, "reset", "view reset (DELETE)"),
            (view, "rebuild", "view rebuild (read + decode + fold + write + index + commit)"),
        ]
        wrapped = [w for w in wrapped if hasattr(w[0], w[1])]
        for obj, attr, name in wrapped:
            setattr(obj, attr, timers.wrap(name, getattr(obj, attr)))
        cpu0 = time.process_time()
        try:
            stats = foundry.recipe_host.rebuild()
        finally:
            cpu = time.process_time() - cpu0
            for obj, attr, _ in wrapped:
                delattr(obj, attr)
        parts = {k: round(v, 3) for k, v in timers.seconds.items()}
        parts["rest (host loop, decode outside the view)"] = round(
            stats.seconds - sum(parts.values()), 3)
        runs.append({"events": stats.events, "batches": stats.batches,
                     "seconds": stats.seconds, "per_s": stats.events / stats.seconds,
                     "client_cpu_s": cpu, "per_client_cpu_s": stats.events / cpu,
                     "parts_s": parts})
    best = max(runs, key=lambda r: r["per_s"])
    return {
        "runs": runs,
        "median_per_s": statistics.median(r["per_s"] for r in runs),
        "best_per_s": best["per_s"],
        "median_per_client_cpu_s": statistics.median(r["per_client_cpu_s"] for r in runs),
        "events": runs[-1]["events"],
    }


def vacuum_view(foundry: Foundry) -> dict[str, Any]:
    """VACUUM ANALYZE the PostgreSQL view table, as autovacuum eventually would.

    Each rebuild DELETEs every row and inserts them again, so after the rebuilds the table
    holds dead tuples that a scan still reads until vacuum runs; the counts are recorded.
    """
    view = foundry.recipe_view
    table = view.spec.table
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        stat = "SELECT n_live_tup, n_dead_tup, pg_total_relation_size(relid) " \
            "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s"
        key = (view.datastore.schema, view.table_name)
        before = conn.execute(stat, key).fetchone()
        started = time.perf_counter()
        conn.execute(f"VACUUM (ANALYZE) {table}")
        seconds = time.perf_counter() - started
        after = conn.execute(stat, key).fetchone()
    counts = {"live": before[0], "dead": before[1], "bytes": before[2]} if before else None
    return {"before": counts, "after_bytes": after[2] if after else None, "seconds": seconds}


# --- 3. list ----------------------------------------------------------------------------------


def list_queries(n_authors: int) -> dict[str, dict[str, Any]]:
    author = f"author-{7 % n_authors}"
    order = [{"field": "updatedAt", "direction": "desc"}]
    return {
        "author filter + orderBy updatedAt": {
            "collection": COLLECTION, "filter": {"author": author}, "orderBy": order,
            "limit": 100,
        },
        "JSON-path filter tags $contains": {
            "collection": COLLECTION, "filter": {"tags": {"$contains": "t3"}}, "orderBy": order,
            "limit": 100,
        },
        "page 3 via cursor (author + updatedAt)": {
            "collection": COLLECTION, "filter": {"author": author}, "orderBy": order,
            "limit": 100, "_page": 3,
        },
    }


def explain(foundry: Foundry, params: dict[str, Any]) -> list[str]:
    """The database's plan for the SQL that one data/list call runs.

    The SQL is captured from the view's `fetch` during a real call, so this follows whatever
    the handler compiles (no handler internals are imported).
    """
    view = foundry.recipe_view
    captured: list[tuple[str, list[Any]]] = []
    fetch = view.fetch

    def spy(sql: str, qparams: Any) -> Any:
        captured.append((sql, list(qparams)))
        return fetch(sql, qparams)

    view.fetch = spy
    try:
        foundry.execute("data/list", params)
    finally:
        del view.fetch
    sql, qparams = captured[-1]
    lines = [sql]
    with view.datastore.transaction(commit=False) as c:
        if view.dialect == "sqlite":
            c.execute("EXPLAIN QUERY PLAN " + sql, qparams)
            return lines + [str(r[3]) for r in c.fetchall()]
        c.execute(("EXPLAIN (ANALYZE, BUFFERS) " + sql).encode(), qparams)
        return lines + [next(iter(r.values())) for r in c.fetchall()]


def bench_list(
    foundry: Foundry, n_authors: int, calls: int, show_plans: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in list_queries(n_authors).items():
        params = {k: v for k, v in spec.items() if not k.startswith("_")}
        for _ in range(spec.get("_page", 1) - 1):  # walk to the page with the cursor
            res = foundry.execute("data/list", params)
            if not res.get("success") or not res.get("nextCursor"):
                raise RuntimeError(f"cannot page: {res.get('error') or 'no nextCursor'}")
            params = {**params, "cursor": res["nextCursor"]}
        count_params = {"collection": COLLECTION, "filter": params.get("filter")}
        matched = foundry.execute("data/count", count_params)["count"]
        for _ in range(LIST_WARMUP):
            foundry.execute("data/list", params)
        lat: list[float] = []
        items = -1
        cpu0 = time.process_time()
        for _ in range(calls):
            t0 = time.perf_counter()
            res = foundry.execute("data/list", params)
            lat.append(time.perf_counter() - t0)
            if not res.get("success"):
                raise RuntimeError(f"data/list failed: {res}")
            items = res["count"]
        cpu = time.process_time() - cpu0
        out[name] = {
            "calls": calls, "matched": matched, "items": items,
            "client_cpu_ms": 1000 * cpu / calls,
            "p50_ms": 1000 * pct(lat, 50), "p95_ms": 1000 * pct(lat, 95),
            "mean_ms": 1000 * statistics.mean(lat),
        }
        if show_plans:
            out[name]["plan"] = explain(foundry, params)
    return out


# --- one backend ------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    store = Store(backend, args.tmpdir)
    n_authors = max(1, min(50, args.recipes // 400))
    result: dict[str, Any] = {"backend": backend, "store": store.where,
                              "recipes": args.recipes, "authors": n_authors,
                              "loadavg_before": loadavg()}
    print(f"== {backend}: {store.where}", flush=True)
    try:
        with Foundry.open(store.url) as foundry:
            result["durability"] = durability(foundry)
            ids, seed_s = seed(foundry, args.recipes, n_authors, rng)
            result["seed"] = {"seconds": seed_s, "per_s": args.recipes / seed_s,
                              "batch": SEED_BATCH}
            print(f"   seeded {args.recipes} recipes in {seed_s:.1f} s", flush=True)

            result["rebuild"] = bench_rebuild(foundry, args.rebuild_repeats)
            print(f"   rebuilt view: {result['rebuild']['median_per_s']:,.0f} events/s (median)",
                  flush=True)
            if args.only == "rebuild":
                if args.profile_dir:
                    profile_rebuild(foundry, Path(args.profile_dir) / f"rebuild-{backend}.prof")
                return result
            if backend == "postgres":
                result["view_vacuum"] = vacuum_view(foundry)

            prof = Path(args.profile_dir) / f"edits-{backend}.prof" if args.profile_dir else None
            edits = bench_edits(store, foundry, ids, args.edits, args.rounds, rng, prof)
            result["edits"] = edits
            print(f"   edits: {edits['per_s']:,.1f}/s, raw {edits['raw_per_s']:,.1f}/s "
                  f"({edits['edit_over_raw']:.2f}x)", flush=True)

            if args.profile_dir:
                profile_rebuild(foundry, Path(args.profile_dir) / f"rebuild-{backend}.prof")

            result["list"] = bench_list(foundry, n_authors, args.list_calls, args.explain)
    finally:
        store.cleanup()
        result["loadavg_after"] = loadavg()
    return result


def profile_rebuild(foundry: Foundry, path: Path) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    foundry.recipe_host.rebuild()
    profiler.disable()
    profiler.dump_stats(str(path))


def print_backend(r: dict[str, Any]) -> None:
    e, rb, ls = r.get("edits"), r["rebuild"], r.get("list")
    w = 58
    print()
    print(f"-- {r['backend']}  ({r['recipes']:,} recipes, {r['authors']} authors, "
          f"{N_TAGS} tags x{TAGS_PER_RECIPE}; {r['durability']}; load average "
          f"{r['loadavg_before']} -> {r['loadavg_after']})")
    print(f"{'seed (Recipe.create + save of ' + str(r['seed']['batch']) + ' per call)':<{w}}"
          f"{r['seed']['per_s']:>12,.0f} recipes/s  ({r['seed']['seconds']:.1f} s)")
    if e is not None:
        print_edits(e, w)
    print_rebuild(r, rb, w)
    if ls is not None:
        print_list(ls, w)
    print(flush=True)


def print_edits(e: dict[str, Any], w: int) -> None:
    print(f"{'1. data/update via execute (end to end)':<{w}}{e['per_s']:>12,.1f} edits/s   "
          f"p50 {e['p50_ms']:.2f} ms  p95 {e['p95_ms']:.2f} ms  "
          f"(client CPU {e['client_cpu_ms_per_edit']:.2f} ms/edit)")
    print(f"{'   raw driver INSERT, same bytes, 1 txn each':<{w}}{e['raw_per_s']:>12,.1f} rows/s")
    ok = "MET" if e["edit_over_raw"] >= EDIT_GOAL else "MISSED"
    print(f"{'   ratio data/update / raw':<{w}}{e['edit_over_raw']:>12.2f} x   "
          f"goal >= {EDIT_GOAL}: {ok}  ({e['edits']} edits over {e['targets']} recipes in "
          f"{e['rounds']} rounds alternating with the raw inserts, "
          f"{e['payload_bytes_mean']:.0f} B/event; {e['view_rows_in_edit_transaction']} "
          "view rows written in the edits' own transactions)")
    for name, b in e["breakdown"].items():
        print(f"{'     ' + name:<{w}}{b['ms_per_edit']:>12.3f} ms/edit  "
              f"({b['calls_per_edit']:.0f} calls)")


def print_rebuild(r: dict[str, Any], rb: dict[str, Any], w: int) -> None:
    runs = ", ".join(f"{x['per_s']:,.0f}" for x in rb["runs"])
    ok = "MET" if rb["median_per_s"] >= 20_000 else "MISSED"
    print(f"{'2. projection rebuild (median of ' + str(len(rb['runs'])) + ')':<{w}}"
          f"{rb['median_per_s']:>12,.0f} events/s  [{runs}]  target >= 20,000: {ok}")
    print(f"{'     per second of client CPU (median)':<{w}}"
          f"{rb['median_per_client_cpu_s']:>12,.0f} events/cpu-s")
    last = rb["runs"][-1]
    label = f"     last run: {last['events']} events in {last['seconds']:.2f} s:"
    print(f"{label:<{w}}" + ", ".join(f"{k} {v:.2f} s" for k, v in last["parts_s"].items()))
    if r.get("view_vacuum"):
        v = r["view_vacuum"]
        b = v["before"] or {}
        print(f"   VACUUM (ANALYZE) of the view after the rebuilds: {b.get('live')} live, "
              f"{b.get('dead')} dead tuples, {(b.get('bytes') or 0) / 2**20:.0f} MiB -> "
              f"{(v['after_bytes'] or 0) / 2**20:.0f} MiB, {v['seconds']:.1f} s")


def print_list(ls: dict[str, Any], w: int) -> None:
    print("3. data/list, limit 100 (ms)")
    for name, q in ls.items():
        ok = "MET" if q["p50_ms"] < 20 else "MISSED"
        print(f"{'     ' + name:<{w}}p50 {q['p50_ms']:7.2f}  p95 {q['p95_ms']:7.2f}  "
              f"client CPU {q['client_cpu_ms']:5.2f}  "
              f"({q['items']} items of {q['matched']:,} matching; {q['calls']} calls)  "
              f"target p50 < 20 ms: {ok}")
        for line in q.get("plan", []):
            print(f"         | {line}")


def print_summary(results: list[dict[str, Any]]) -> None:
    """The backends side by side: the edit ratio against its goal, and the rebuild rate."""
    print("== Summary")
    names = [r["backend"] for r in results]
    print(f"{'':<44}" + "".join(f"{n:>16}" for n in names))

    def line(label: str, cell: Any) -> None:
        print(f"{label:<44}" + "".join(f"{cell(r):>16}" for r in results))

    if all(r.get("edits") for r in results):
        line("data/update edits/s", lambda r: f"{r['edits']['per_s']:,.1f}")
        line("raw durable inserts/s (same bytes)", lambda r: f"{r['edits']['raw_per_s']:,.1f}")
        line(f"data/update / raw (goal >= {EDIT_GOAL})",
             lambda r: f"{r['edits']['edit_over_raw']:.2f}x "
                       + ("MET" if r["edits"]["edit_over_raw"] >= EDIT_GOAL else "MISSED"))
        line("data/update p50 ms", lambda r: f"{r['edits']['p50_ms']:.2f}")
    line("rebuild events/s (goal >= 20,000)",
         lambda r: f"{r['rebuild']['median_per_s']:,.0f} "
                   + ("MET" if r["rebuild"]["median_per_s"] >= 20_000 else "MISSED"))
    line("load average before -> after", lambda r: f"{r['loadavg_before'].split()[0]}->"
                                                   f"{r['loadavg_after'].split()[0]}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--recipes", type=int, default=100_000)
    p.add_argument("--edits", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=10,
                   help="edit rounds, each followed by its raw-insert baseline")
    p.add_argument("--quick", action="store_true", help="smoke run: 2000 recipes, 200 edits")
    p.add_argument("--list-calls", type=int, default=200)
    p.add_argument("--rebuild-repeats", type=int, default=3)
    p.add_argument("--only", choices=["all", "rebuild"], default="all",
                   help="rebuild: seed and measure the projection rebuild only")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tmpdir", default=None, help="parent of the SQLite tmp dir")
    p.add_argument("--explain", action="store_true", help="print each data/list query plan")
    p.add_argument("--profile-dir", default=None,
                   help="write cProfile stats of the edit loop and one rebuild here")
    args = p.parse_args(argv)
    if args.quick:
        args.recipes, args.edits = 2000, 200
    structlog.configure(  # the dispatcher logs refusals; keep the tables readable
        wrapper_class=structlog.make_filtering_bound_logger(40),
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    info = machine_info(backends)
    print_machine(info)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n", flush=True)
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for backend in backends:
        r = run_backend(backend, args)
        print_backend(r)
        results.append(r)
        if args.profile_dir:
            for kind in ("edits", "rebuild"):
                path = Path(args.profile_dir) / f"{kind}-{backend}.prof"
                if path.exists():
                    print(f"-- cProfile {kind} {backend} (top 15 by cumulative)")
                    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(15)
    print_summary(results)
    print(json.dumps({"machine": info, "args": vars(args), "results": results},
                     default=str, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
