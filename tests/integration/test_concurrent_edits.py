"""Optimistic concurrency across real processes: 8 writers, one recipe, no edit lost or doubled.

Each process opens its own Foundry on the same store and makes its edits as a careful client
would: read (which gives `revision`), append its own marker to `tags`, write with
`expectedRevision`, and on `revision_conflict` read again and retry. Afterwards the recipe and
its history must account for every edit exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.conftest import ROOT

R = "forge_recipes"
PROCESSES = 8
EDITS = 10

WORKER = r"""
import json, pathlib, sys, time
from foundry.adapters.log_setup import configure_logging
configure_logging("ERROR")
from foundry.adapters.bootstrap import Foundry

url, rid, me, edits = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
work = pathlib.Path(sys.argv[5])
R = "forge_recipes"
attempts, conflicts, unexpected, written = 0, 0, [], []
with Foundry.open(url) as foundry:
    (work / f"ready-{me}").touch()
    deadline = time.monotonic() + 60
    while not (work / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.005)
    deadline = started = time.monotonic()
    deadline += 90
    for e in range(edits):
        marker = f"p{me}-e{e}"
        while True:
            attempts += 1
            if time.monotonic() > deadline:
                unexpected.append({"gaveUp": marker})
                break
            read = foundry.execute("data/read", {"collection": R, "id": rid})
            if not read.get("success") or not read.get("found"):
                unexpected.append({"command": "data/read", **read})
                break
            revision = read["data"]["revision"]
            result = foundry.execute("data/update", {
                "collection": R, "id": rid, "data": {"tags": [*read["data"]["tags"], marker]},
                "expectedRevision": revision, "author": f"p{me}", "reason": marker,
            })
            if result.get("success"):
                written.append({"marker": marker, "expected": revision,
                                "previous": result["previousRevision"],
                                "new": result["newRevision"]})
                break
            if result.get("errorCode") == "revision_conflict":
                conflicts += 1
                continue
            unexpected.append({"command": "data/update", **result})
            break
(work / f"result-{me}.json").write_text(json.dumps(
    {"attempts": attempts, "conflicts": conflicts, "unexpected": unexpected,
     "written": written, "seconds": time.monotonic() - started}))
"""


def run_writers(store_url: str, rid: str, work: Path) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, store_url, rid, str(i), str(EDITS), str(work)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(work.glob("ready-*"))) < PROCESSES:
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, [p.communicate() for p in dead]
            assert time.monotonic() < deadline, "the writers did not start within 60 s"
            time.sleep(0.02)
        (work / "go").touch()  # all start editing at once
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [json.loads((work / f"result-{i}.json").read_text()) for i in range(PROCESSES)]


def full_history(foundry: Any, rid: str, page: int = 7) -> list[dict[str, Any]]:
    """Every history item, paged with limit/afterRevision."""
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        result = foundry.execute("data/history", {"collection": R, "id": rid, "limit": page,
                                                  "afterRevision": after})
        assert result["success"], result
        assert result["count"] == len(result["items"]) <= page
        if not result["items"]:
            return items
        items += result["items"]
        after = result["items"][-1]["revision"]


def test_eight_processes_editing_one_recipe_lose_and_double_no_edit(
    store_url, tmp_path, recipe_data
):
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as foundry:
        created = foundry.execute("data/create", {"collection": R, "data": recipe_data})
        assert created["success"], created
    rid = created["id"]
    work = tmp_path / "signals"
    work.mkdir()

    started = time.monotonic()
    results = run_writers(store_url, rid, work)
    elapsed = time.monotonic() - started
    print(f"{elapsed:.1f} s in all; editing:", [round(r["seconds"], 1) for r in results],
          "attempts:", [r["attempts"] for r in results])

    assert [r["unexpected"] for r in results] == [[]] * PROCESSES
    markers = [f"p{i}-e{e}" for i in range(PROCESSES) for e in range(EDITS)]
    written = [w for r in results for w in r["written"]]
    assert sorted(w["marker"] for w in written) == sorted(markers)
    # Every success moved the revision by one from the one its writer had read.
    assert all(w["previous"] == w["expected"] and w["new"] == w["expected"] + 1
               for w in written), written
    assert sorted(w["new"] for w in written) == list(range(2, PROCESSES * EDITS + 2))
    # The race was real: somebody had to retry (else this test proves nothing).
    assert sum(r["conflicts"] for r in results) > 0, (results, elapsed)

    with Foundry.open(store_url) as foundry:
        read = foundry.execute("data/read", {"collection": R, "id": rid})
        assert read["success"] and read["found"], read
        tags = read["data"]["tags"]
        assert read["data"]["revision"] == PROCESSES * EDITS + 1
        assert tags[: len(recipe_data["tags"])] == recipe_data["tags"]
        added = tags[len(recipe_data["tags"]):]
        assert sorted(added) == sorted(markers), "a marker was lost or written twice"

        history = full_history(foundry, rid)
        assert [h["revision"] for h in history] == list(range(1, PROCESSES * EDITS + 2))
        assert history[0]["event"] == "Created"
        edits = history[1:]
        assert [h["event"] for h in edits] == ["Edited"] * (PROCESSES * EDITS)
        seen = []
        for h in edits:
            (change,) = h["changes"]  # each edit changed the tags and nothing else
            assert change["field"] == "tags", h
            assert change["new"][:-1] == change["old"], h  # appended to what was current
            marker = change["new"][-1]
            assert h["reason"] == marker and marker.startswith(h["author"] + "-"), h
            seen.append(marker)
        assert sorted(seen) == sorted(markers)
        assert seen == added  # the history replays to the current tags, in order
        # The view agrees with the event store's aggregate.
        assert foundry.recipes.get_recipe(UUID(rid)).data["tags"] == tags
