"""Fork vs original (issue #14, "Done when"): what the stage cache by fingerprint saves.

With the real executors (torch, transformers, llama.cpp) on the tiny Llama and corpus that
``scripts/demo.py`` builds on this machine (nothing is downloaded):

1. forge the example recipe (prune, train, LoRA, GGUF quant, eval) in a fresh SQLite store;
2. fork it changing only ``quantTiers`` and the eval stage, forge the fork: prune, train and
   LoRA have the same fingerprints and are taken from the first run (StageReused), quant and
   eval run again (quant reads quantTiers; eval's config changed);
3. forge the same fork again with ``reuse: false`` (``forge run --no-reuse``): every stage.

It prints the wall time of each run, the ratios fork/original and no-reuse/original, every
reused stage with the run and stage it came from (from the StageReused events), the machine
and the load average before and after, then one JSON line.

    .venv/bin/python benchmarks/bench_fork_reuse.py [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from _demo import demo_module

from foundry.adapters.bootstrap import Foundry
from foundry.adapters.settings import Settings

from _machine import loadavg, machine_info

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"
R = "forge_recipes"
# The fork's quant tiers: Q8_0 kept, Q4_K_M replaced by Q5_K_M (quant reads quantTiers).
FORK_TIERS = [{"format": "gguf", "variants": ["Q8_0", "Q5_K_M"], "targetDevices": ["cpu"]}]
# The fork's eval: the same benchmark without the base-model comparison.
FORK_EVAL = {"type": "eval", "benchmarks": [{"name": "perplexity"}], "compareToBase": False}


def ok(envelope: dict[str, Any]) -> dict[str, Any]:
    if not envelope.get("success"):
        raise SystemExit(f"command failed: {json.dumps(envelope)[:2000]}")
    return envelope


def forge(foundry: Foundry, recipe_id: str, **params: Any) -> tuple[str, float]:
    """(run id, wall seconds) of one forge/run that waits for the run to end."""
    start = time.perf_counter()
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id, **params}))
    seconds = time.perf_counter() - start
    if result.get("status") != "completed":
        raise SystemExit(f"run did not complete: {json.dumps(result)[:2000]}")
    return str(result["runId"]), seconds


def reused_stages(foundry: Foundry, run_id: str) -> list[dict[str, Any]]:
    """Every StageReused event of the run: which stage, and where its outputs came from."""
    stored = foundry.runs.recorder.select_events(UUID(run_id))
    events = [foundry.runs.mapper.to_domain_event(s) for s in stored]
    return [{"stage": e.stage_type, "cycle": e.cycle, "index": e.index,
             "from": e.reused_from} for e in events if type(e).__name__ == "StageReused"]


def stage_types(foundry: Foundry, run_id: str) -> list[str]:
    state = foundry.runs.get_run(UUID(run_id)).state
    return [str(s["type"]) for s in sorted(state["stages"].values(),
                                           key=lambda s: (s["cycle"], s["index"]))]


def fork_data(recipe: dict[str, Any]) -> dict[str, Any]:
    stages = [FORK_EVAL if s["type"] == "eval" else s for s in copy.deepcopy(recipe["stages"])]
    return {"quantTiers": FORK_TIERS, "stages": stages}


def measure(work: Path) -> dict[str, Any]:
    demo = demo_module()
    corpus, model = demo.build_inputs()  # the demo's own inputs, built once and reused
    recipe = json.loads(EXAMPLE.read_text())
    recipe.update(demo.local_inputs(corpus, model))
    settings = dataclasses.replace(Settings.from_env(), executors="real",
                                   state_dir=work / "state")
    with Foundry.open(f"sqlite:///{work / 'foundry.db'}", settings=settings) as foundry:
        original = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
        first_run, first_s = forge(foundry, original)
        fork = ok(foundry.execute("recipe/fork", {"id": original, "data": fork_data(recipe)}))
        fork_run, fork_s = forge(foundry, fork["id"])
        again_run, again_s = forge(foundry, fork["id"], reuse=False)
        return {
            "original": {"runId": first_run, "seconds": round(first_s, 2),
                         "stages": stage_types(foundry, first_run)},
            "fork": {"runId": fork_run, "seconds": round(fork_s, 2),
                     "ratio": round(fork_s / first_s, 3),
                     "reused": reused_stages(foundry, fork_run)},
            "forkNoReuse": {"runId": again_run, "seconds": round(again_s, 2),
                            "ratio": round(again_s / first_s, 3),
                            "reused": reused_stages(foundry, again_run)},
        }


def report(result: dict[str, Any]) -> None:
    o, f, n = result["original"], result["fork"], result["forkNoReuse"]
    print(f"original   {o['seconds']:8.1f} s   stages {', '.join(o['stages'])}")
    print(f"fork       {f['seconds']:8.1f} s   ratio fork/original {f['ratio']:.3f}")
    for r in f["reused"]:
        src = r["from"]
        print(f"  reused {r['stage']} (cycle {r['cycle']}, index {r['index']}) from run "
              f"{src.get('runId')} {src.get('type')} (cycle {src.get('cycle')}, "
              f"index {src.get('index')})")
    print(f"--no-reuse {n['seconds']:8.1f} s   ratio no-reuse/original {n['ratio']:.3f}, "
          f"{len(n['reused'])} stages reused")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="store and blobs here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    os.environ.setdefault("FOUNDRY_LOG_LEVEL", "WARNING")
    work = args.work or Path(tempfile.mkdtemp(prefix="foundry-bench-fork-"))
    work.mkdir(parents=True, exist_ok=True)
    before = loadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        result = measure(work)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result.update(started=started, loadBefore=before, loadAfter=loadavg(),
                  machine=machine_info())
    print(f"started {started}; load before {before}, after {result['loadAfter']}")
    report(result)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
