"""HTTP benchmark (issue 13): `foundry serve` against the in-process `execute`, and SSE delivery
lag with many clients.

A temp SQLite store with 200 recipes (the example on ``fake://tiny``), served by a real
`foundry serve` subprocess on a free loopback port (fake executors). Then:

1. Latency: the same commands (data/read, data/list of 20, data/count, forge/status) N times
   one after the other, in this process through ``Foundry.execute`` and over HTTP (one
   keep-alive connection); median and p95 per command and the HTTP/in-process ratio.
2. Throughput: data/read from 8 threads for a few seconds, HTTP (a connection each) against
   in-process (the same Foundry shared by the threads), requests per second and the ratio.
3. One run: forge/run (wait: true, fake executors, no sleep) five times each way.
4. SSE lag: C clients (default 50) follow the all-runs stream (GET /v1/runs/events); one run
   is requested with wait: false (a worker process the server spawns; fake stages, no sleep);
   each client records, per event, its arrival time minus the event's recordedAt (the time
   the event was made, just before its commit; one clock). Median, p95 and max over every
   (client, event), and whether every client got every event.

    .venv/bin/python benchmarks/bench_http.py                  # ~1 minute on 2 cores
    .venv/bin/python benchmarks/bench_http.py --n 100 --clients 50 --json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from foundry.adapters.bootstrap import Foundry
from foundry.adapters.store.config import parse_database_url
from foundry.adapters.store.tokens import ApiTokens

from _machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
R = "forge_recipes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: str, work: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FOUNDRY_EXECUTORS": "fake", "FOUNDRY_FAKE_SLEEP": "0",
           "FOUNDRY_STATE_DIR": str(work / "state"), "FOUNDRY_KEYS_DIR": str(work / "keys"),
           "FOUNDRY_FAKE_MODELS": str(work / "fake-models")}
    env.pop("FOUNDRY_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "foundry.adapters.cli.main", "--db", db,
                             "serve", "--port", str(port), "--rate-limit", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("foundry serve did not start")


def stats_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3)}


def timed(call: Callable[[], dict[str, Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        body = call()
        out.append(time.perf_counter() - t0)
        assert body.get("success"), body
    return out


def throughput(call: Callable[[], Any], threads: int, seconds: float) -> float:
    done, stop = [0] * threads, time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < stop:
            call()
            done[i] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / seconds


def sse_lag(url: str, token: str, head: int, clients: int, start_run: Callable[[], str]
            ) -> dict[str, Any]:
    lags: list[list[float]] = [[] for _ in range(clients)]
    events: list[int] = [0] * clients
    connected = threading.Barrier(clients + 1, timeout=60)
    run: dict[str, str] = {}

    def follow(i: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": str(head)}
        with httpx.stream("GET", f"{url}/v1/runs/events", headers=headers,
                          timeout=httpx.Timeout(120)) as response:
            connected.wait()
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                now = time.time()
                data = json.loads(line[6:])
                recorded = datetime.fromisoformat(data["recordedAt"]).timestamp()
                lags[i].append(now - recorded)
                events[i] += 1
                if data["runId"] == run.get("id") and data["event"] in ("Completed", "Failed"):
                    return

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    connected.wait()
    run["id"] = start_run()
    for t in threads:
        t.join(120)
    flat = [x for per in lags for x in per]
    return {"clients": clients, "events_per_client": sorted(set(events)),
            "every_client_got_every_event": len(set(events)) == 1,
            **stats_ms(flat), "max_ms": round(max(flat) * 1000, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="calls per command and path")
    parser.add_argument("--clients", type=int, default=50, help="SSE clients")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    db = f"sqlite:///{work / 'foundry.db'}"
    os.environ.update(FOUNDRY_EXECUTORS="fake", FOUNDRY_STATE_DIR=str(work / "state"),
                      FOUNDRY_KEYS_DIR=str(work / "keys"),
                      FOUNDRY_FAKE_MODELS=str(work / "fake-models"))
    os.environ.pop("FOUNDRY_FAKE_SLEEP", None)
    recipe = json.loads((ROOT / "examples" / "tiny-recipe.json").read_text())
    recipe["source"]["baseModel"] = "fake://tiny"
    report: dict[str, Any] = {"machine": machine_info(), "store": "sqlite", "n": args.n}
    port = free_port()
    with Foundry.open(db) as foundry:
        ids = [foundry.execute("data/create", {"collection": R, "data": {
            **copy.deepcopy(recipe), "name": f"r{i}"}})["id"] for i in range(200)]
        run_id = foundry.execute("forge/run", {"recipeId": ids[0]})["runId"]
        tokens = ApiTokens.open(parse_database_url(db))
        token = tokens.issue("bench", "admin", issued_by="bench")["token"]
        proc = start_server(db, work, port)
        url = f"http://127.0.0.1:{port}"
        try:
            client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)

            def over_http(command: str, params: dict[str, Any]) -> dict[str, Any]:
                body: dict[str, Any] = client.post(f"{url}/v1/commands/{command}",
                                                   json=params).json()
                return body

            cases = {
                "data/read": {"collection": R, "id": ids[7]},
                "data/list": {"collection": R, "limit": 20},
                "data/count": {"collection": R},
                "forge/status": {"runId": run_id},
            }
            latency = {}
            for command, params in cases.items():
                timed(lambda c=command, p=params: foundry.execute(c, p), 10)  # warm-up
                timed(lambda c=command, p=params: over_http(c, p), 10)
                local = stats_ms(timed(lambda c=command, p=params: foundry.execute(c, p),
                                       args.n))
                remote = stats_ms(timed(lambda c=command, p=params: over_http(c, p), args.n))
                latency[command] = {"in_process": local, "http": remote, "ratio_median": round(
                    remote["median_ms"] / max(local["median_ms"], 1e-6), 2)}
            report["latency"] = latency

            read = cases["data/read"]
            local_rps = throughput(lambda: foundry.execute("data/read", read), 8, 3.0)
            clients = threading.local()

            def http_read() -> None:
                if not hasattr(clients, "c"):
                    clients.c = httpx.Client(headers={"Authorization": f"Bearer {token}"})
                clients.c.post(f"{url}/v1/commands/data/read", json=read)

            http_rps = throughput(http_read, 8, 3.0)
            report["throughput_data_read_8_threads"] = {
                "in_process_rps": round(local_rps, 1), "http_rps": round(http_rps, 1),
                "ratio": round(http_rps / local_rps, 3)}

            run_local = timed(lambda: foundry.execute("forge/run", {"recipeId": ids[1]}), 5)
            run_http = timed(lambda: over_http("forge/run", {"recipeId": ids[2]}), 5)
            report["forge_run_wait"] = {"in_process": stats_ms(run_local),
                                        "http": stats_ms(run_http)}

            head = int(foundry.runs.recorder.max_notification_id() or 0)
            report["sse"] = sse_lag(url, token, head, args.clients, lambda: str(over_http(
                "forge/run", {"recipeId": ids[3], "wait": False})["runId"]))
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            tokens.close()
    shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0


def print_report(report: dict[str, Any]) -> None:
    print("machine:", ", ".join(f"{k}={v}" for k, v in report["machine"].items()))
    print(f"\nlatency, {report['n']} calls each (ms)        in-process med/p95    "
          "HTTP med/p95    ratio")
    for command, row in report["latency"].items():
        a, b = row["in_process"], row["http"]
        print(f"  {command:<16} {a['median_ms']:>22.3f}/{a['p95_ms']:<8.3f} "
              f"{b['median_ms']:>8.3f}/{b['p95_ms']:<8.3f} {row['ratio_median']:>6.2f}x")
    t = report["throughput_data_read_8_threads"]
    print(f"\nthroughput data/read, 8 threads: in-process {t['in_process_rps']} req/s, HTTP "
          f"{t['http_rps']} req/s (ratio {t['ratio']})")
    f = report["forge_run_wait"]
    print(f"forge/run wait=true (fake executors, 5 runs): in-process "
          f"{f['in_process']['median_ms']} ms, HTTP {f['http']['median_ms']} ms median")
    s = report["sse"]
    print(f"SSE lag, {s['clients']} clients on /v1/runs/events: median {s['median_ms']} ms, "
          f"p95 {s['p95_ms']} ms, max {s['max_ms']} ms; events per client "
          f"{s['events_per_client']} (every client got every event: "
          f"{s['every_client_got_every_event']})")


if __name__ == "__main__":
    sys.exit(main())
