"""Tiny pipeline benchmark (issue 4): wall time per stage, the foundry's overhead against
calling the same stage executors directly, and llama.cpp tokens/s of each GGUF tier.

Inputs: the corpus and the tiny Llama that ``scripts/demo.py`` builds (its ``build_inputs``,
reused as they are under ``.foundry/`` or built once), and ``examples/tiny-recipe.json``
pointed at them with the demo's own ``local_inputs`` (same corpus hash, same model).

Each repeat runs the pipeline twice, alternating which goes first:

1. **foundry**: a fresh SQLite store and state dir in a temp dir, the recipe created there,
   then ``forge/run`` (wait true) timed end to end: recipe pin, run request, the source stored
   and materialised, each stage's events (started, throttled progress, completed), every
   output hashed, copied and fsync'd into the blob store, benchmarks, gate, seal, views.
   Per stage: the executor's ``seconds`` as the run recorded them, and the stage's span (from
   the ``stage_started`` to the ``stage_completed`` listener call, i.e. including storing its
   outputs and its completion event).
2. **direct**: the very same executor objects, ``executor.run(ctx, reporter)`` in the run's
   own order (``foundry.adapters.runs.orchestrator.plan`` of the recipe the foundry pinned)
   on the same inputs, seed 0, same device, a reporter that does nothing, each output
   directory the next stage's input; no store, no blobs.

Before each pipeline the corpus token cache of ``foundry.executors.real.data`` is cleared, so both
start like a fresh worker; heavy imports and one forward/backward pass are done first,
untimed. Overhead = (foundry total - direct total) / direct total on the medians. Since
other work on the machine moves stage times by more than that, it also reports the foundry's
own time (its total less the executors' own work: run events, the reporter's calls, blob
store, source, seal; timed by wrapping those calls) and CPU time in both modes. Both paths
must end with the same stage output hashes, or the table says they did not.

Then every GGUF tier the quant stage wrote (f32 and each variant) is loaded by
``llama_cpp.Llama`` (``--threads``, n_ctx = the model's context) and timed on a fixed prompt
cut from the held-out corpus split (``valid.txt``): prompt processing (one batch of
``--prompt-tokens``) and greedy generation of ``--gen-tokens`` new tokens (EOS ignored:
``Llama.generate`` never stops by itself), one untimed warm-up then ``--tok-repeats`` timed
runs, median; wall clock around the Python calls, and llama.cpp's own decode counters. Each
``--threads`` count in turn (default 2, then 1): on the shared 2-vCPU machine, 2-thread
decoding of this tiny model measured slower and far noisier than 1 thread (the threads
synchronise after every operation of every token, and other work often holds one CPU).

    .venv/bin/python benchmarks/bench_pipeline.py                 # about 1.5 min on 2 cores
    .venv/bin/python benchmarks/bench_pipeline.py --repeats 5 --json   # docs/performance.md

It prints the machine (load average at the start and the end), the tables, and with
``--json`` a final JSON line. ``--executors fake`` runs the same code on the deterministic
fake stages (no torch, no GGUF): a smoke test of the benchmark, not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from _demo import demo_module

import foundry.executors.real  # first: sets OMP_WAIT_POLICY before torch loads

from _machine import load_1min, loadavg, version
from _machine import machine_info as base_machine_info

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"
TARGET_OVERHEAD = 0.05  # the target: under 5 % of the direct wall time
CONTENTION_LOAD = 1.5  # 1-minute load average above which the figures are under contention


# --- inputs -----------------------------------------------------------------------------------

def real_recipe(work: Path | None) -> tuple[dict[str, Any], Path]:
    """The example recipe pointed at the demo's corpus and model; (recipe, corpus dir)."""
    demo = demo_module()
    corpus, model = demo.build_inputs(work) if work else demo.build_inputs()
    recipe = json.loads(EXAMPLE.read_text())
    recipe.update(demo.local_inputs(corpus, model))
    return recipe, corpus


def fake_recipe() -> dict[str, Any]:
    """The example recipe on the fake source: the smoke-test path (no corpus, no torch)."""
    recipe = json.loads(EXAMPLE.read_text())
    recipe["source"] = {"baseModel": "fake://bench-pipeline", "architecture": "llama"}
    return recipe


# --- the two ways of running the stages -------------------------------------------------------

class NullReporter:
    """A StageReporter that records nothing: what calling an executor directly costs."""

    def progress(self, fraction: float, message: str = "",  # noqa: ARG002 (the protocol)
                 metrics: Mapping[str, float] | None = None) -> None:  # noqa: ARG002
        return None


def clear_token_cache() -> None:
    """Forget tokenized corpora, so every pipeline starts like a fresh worker process."""
    from foundry.executors.real import data

    data._CACHE.clear()  # a benchmark resets module state on purpose


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (quant verifies in children)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Timers:
    """Seconds spent in wrapped callables, in total and per stage (cycle, index)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.per_stage: dict[tuple[int, int], float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.total[name] = self.total.get(name, 0.0) + seconds


@contextlib.contextmanager
def instrumented(foundry: Any, timers: Timers) -> Iterator[None]:
    """Time what the foundry adds inside a run: every run-event write (aggregate load, command,
    commit), the reporter's calls (heartbeat file, throttled StageProgressed events) per stage,
    and the blob store (hash, copy, fsync; materialise)."""
    from foundry.adapters.runs.progress import RunReporter
    from foundry.adapters.store.blobs import BlobStore

    def wrap(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers.add(name, time.perf_counter() - t0)
        return wrapper

    original_progress = RunReporter.progress

    def progress(self: Any, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            original_progress(self, *args, **kwargs)
        finally:
            key = (self.cycle, self.index)
            timers.per_stage[key] = timers.per_stage.get(key, 0.0) + time.perf_counter() - t0

    blob_methods = {name: getattr(BlobStore, name) for name in ("put_file", "materialize")}
    foundry.runs.record = wrap("run events", foundry.runs.record)
    RunReporter.progress = progress  # type: ignore[method-assign]
    for name, fn in blob_methods.items():
        setattr(BlobStore, name, wrap("blob store", fn))
    try:
        yield
    finally:
        del foundry.runs.record
        RunReporter.progress = original_progress  # type: ignore[method-assign]
        for name, fn in blob_methods.items():
            setattr(BlobStore, name, fn)


def run_foundry(recipe: dict[str, Any], registry: Any, tmp: Path) -> dict[str, Any]:
    """One forge/run of `recipe` in a fresh store under `tmp`, timed."""
    from foundry.adapters.bootstrap import Foundry

    spans: dict[tuple[int, int], tuple[float, float]] = {}
    started: dict[tuple[int, int], tuple[float, float]] = {}

    def listener(event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "stage_started":
            started[(event["cycle"], event["index"])] = (time.perf_counter(), cpu_seconds())
        elif kind == "stage_completed":
            key = (event["cycle"], event["index"])
            spans[key] = (time.perf_counter() - started[key][0],
                          cpu_seconds() - started[key][1])

    timers = Timers()
    with env(FOUNDRY_STATE_DIR=str(tmp / "state"), FOUNDRY_KEYS_DIR=str(tmp / "keys")), \
            Foundry.open(f"sqlite:///{tmp / 'foundry.db'}") as foundry:
        foundry.use_registry(registry)
        made = foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe})
        if not made["success"]:
            raise SystemExit(f"data/create refused the recipe: {made}")
        clear_token_cache()
        gc.collect()
        with instrumented(foundry, timers):
            c0, t0 = cpu_seconds(), time.perf_counter()
            result = foundry.execute("forge/run", {"recipeId": made["id"], "wait": True},
                                     progress=listener)
            total, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if not result["success"] or result["status"] != "completed":
            raise SystemExit(f"forge/run did not complete: {json.dumps(result)[:2000]}")
        run = foundry.runs.get_run(uuid.UUID(result["runId"]))
        pinned = run.state["recipe"]
        records = {(r["cycle"], r["index"]): r for r in run.state["stages"].values()}
        events = len(foundry.runs.recorder.select_events(run.id, limit=100_000))
    stages = []
    for s in result["stages"]:
        key = (s["cycle"], s["index"])
        stages.append({"cycle": s["cycle"], "index": s["index"], "type": s["type"],
                       "executor_s": float(s["seconds"]), "span_s": spans[key][0],
                       "cpu_s": spans[key][1], "progress_s": timers.per_stage.get(key, 0.0),
                       "output_hash": s["outputHash"],
                       "metrics": records[key].get("metrics") or {}})
    return {"mode": "foundry", "total_s": total, "cpu_s": cpu, "events": events,
            "run_events_s": timers.total.get("run events", 0.0),
            "blob_store_s": timers.total.get("blob store", 0.0),
            "stages": stages, "recipe": pinned}


def run_direct(recipe: dict[str, Any], registry: Any, work: Path) -> dict[str, Any]:
    """The same executors called one after the other, as the run orders them, timed."""
    from foundry.adapters.runs.orchestrator import plan
    from foundry.adapters.store.blobs import hash_dir
    from foundry.executors.base import StageContext

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = registry.source_resolver(recipe["source"])
    current = base
    stages: list[dict[str, Any]] = []
    clear_token_cache()
    gc.collect()
    c0, t0 = cpu_seconds(), time.perf_counter()
    for cycle, index, stage in plan(recipe):
        s0, sc = time.perf_counter(), cpu_seconds()
        out, scratch = work / f"c{cycle}-s{index}", work / f"c{cycle}-s{index}.scratch"
        out.mkdir()
        scratch.mkdir()
        ctx = StageContext(run_id="direct", cycle=cycle, index=index, stage=stage,
                           recipe=recipe, input_dir=current, output_dir=out,
                           work_dir=scratch, base_model_dir=base, seed=0,
                           device=registry.device)
        result = registry.get(stage["type"]).run(ctx, NullReporter())
        stages.append({"cycle": cycle, "index": index, "type": stage["type"],
                       "executor_s": time.perf_counter() - s0,
                       "cpu_s": cpu_seconds() - sc, "metrics": dict(result.metrics),
                       "files": [str(p) for p in result.files]})
        current = result.output_dir
    total, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    for s in stages:  # untimed
        s["output_hash"] = hash_dir(work / f"c{s['cycle']}-s{s['index']}")
    return {"mode": "direct", "total_s": total, "cpu_s": cpu, "stages": stages}


def warm_up(model_dir: Path | None) -> None:
    """Pay one-time costs before any timing: imports, torch kernels, llama.cpp's library."""
    if model_dir is None:
        return
    import gguf  # noqa: F401
    import llama_cpp  # noqa: F401
    import peft  # noqa: F401
    import torch

    from foundry.executors.real import evaluate, lora, prune, quant, train  # noqa: F401
    from foundry.executors.real.common import load_model

    model, _ = load_model(model_dir)
    ids = torch.arange(64).view(1, 64) % model.config.vocab_size
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    del model
    gc.collect()


# --- figures ----------------------------------------------------------------------------------

def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarize(foundry_runs: Sequence[Mapping[str, Any]],
              direct_runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians per stage and in total, and the foundry's overhead against the direct calls.

    Every run must list the same stages in the same order. Per stage: the direct time, the
    executor's time inside the foundry (its recorded `seconds`: the executor plus what the
    reporter records), the stage's span in the foundry (plus storing its outputs and its
    completion event); overhead = span - direct. What forge/run spends outside the stage
    spans (pin, request, source, started events, seal, views) is the `rest`. The foundry's
    own time per run is its total less the executors' work (their recorded seconds less the
    reporter's calls). Both are medians over the runs. CPU: this process and its reaped
    children, per stage and in total.
    """
    if not foundry_runs or not direct_runs:
        raise ValueError("need at least one foundry run and one direct run")
    layout = [(s["cycle"], s["index"], s["type"]) for s in direct_runs[0]["stages"]]
    for r in [*foundry_runs, *direct_runs]:
        got = [(s["cycle"], s["index"], s["type"]) for s in r["stages"]]
        if got != layout:
            raise ValueError(f"{r['mode']} ran {got}, not {layout}")
    stages = []
    for i, (cycle, index, kind) in enumerate(layout):
        direct = _median([r["stages"][i]["executor_s"] for r in direct_runs])
        executor = _median([r["stages"][i]["executor_s"] for r in foundry_runs])
        span = _median([r["stages"][i]["span_s"] for r in foundry_runs])
        progress = _median([r["stages"][i].get("progress_s", 0.0) for r in foundry_runs])
        direct_cpu = _median([r["stages"][i].get("cpu_s", 0.0) for r in direct_runs])
        foundry_cpu = _median([r["stages"][i].get("cpu_s", 0.0) for r in foundry_runs])
        hashes = {r["stages"][i]["output_hash"] for r in [*foundry_runs, *direct_runs]}
        stages.append({
            "cycle": cycle, "index": index, "type": kind, "direct_s": round(direct, 3),
            "foundry_executor_s": round(executor, 3), "foundry_span_s": round(span, 3),
            "overhead_s": round(span - direct, 3),
            "overhead_pct": round((span - direct) / direct * 100, 2) if direct > 0 else None,
            "foundry_progress_s": round(progress, 3),
            "direct_cpu_s": round(direct_cpu, 3), "foundry_cpu_s": round(foundry_cpu, 3),
            "same_output": len(hashes) == 1,
        })
    foundry_total = _median([r["total_s"] for r in foundry_runs])
    direct_total = _median([r["total_s"] for r in direct_runs])
    rest = _median([r["total_s"] - sum(st["span_s"] for st in r["stages"])
                    for r in foundry_runs])
    # The foundry's own time in a run: everything but the executors' own work (their recorded
    # seconds less the reporter's calls). Unlike the wall-clock difference, it does not move
    # when other work on the machine slows the stages themselves down.
    own = _median([r["total_s"] - sum(st["executor_s"] - st.get("progress_s", 0.0)
                                      for st in r["stages"]) for r in foundry_runs])
    foundry_cpu = _median([r["cpu_s"] for r in foundry_runs])
    direct_cpu = _median([r["cpu_s"] for r in direct_runs])
    overhead = (foundry_total - direct_total) / direct_total
    paired = [round((f["total_s"] - d["total_s"]) / d["total_s"] * 100, 2)
              for f, d in zip(foundry_runs, direct_runs, strict=False)]
    return {
        "stages": stages,
        "foundry_total_s": round(foundry_total, 3),
        "direct_total_s": round(direct_total, 3),
        "rest_of_forge_run_s": round(rest, 3),
        "run_events_s": round(_median([r.get("run_events_s", 0.0) for r in foundry_runs]), 3),
        "blob_store_s": round(_median([r.get("blob_store_s", 0.0) for r in foundry_runs]), 3),
        "overhead_s": round(foundry_total - direct_total, 3),
        "overhead_pct": round(overhead * 100, 2),
        "overhead_pct_per_repeat": paired,
        "target_pct": TARGET_OVERHEAD * 100,
        "target_met": overhead < TARGET_OVERHEAD,
        "foundry_own_s": round(own, 3),
        "foundry_own_pct": round(own / direct_total * 100, 2),
        "foundry_cpu_s": round(foundry_cpu, 3),
        "direct_cpu_s": round(direct_cpu, 3),
        "cpu_overhead_pct": round((foundry_cpu - direct_cpu) / direct_cpu * 100, 2)
        if direct_cpu > 0 else None,
        "foundry_runs_s": [round(r["total_s"], 3) for r in foundry_runs],
        "direct_runs_s": [round(r["total_s"], 3) for r in direct_runs],
        "same_outputs": all(s["same_output"] for s in stages),
        "events_per_run": [r.get("events") for r in foundry_runs],
    }


# --- GGUF tiers in llama.cpp ------------------------------------------------------------------

def tier_name(path: Path) -> str:
    """`model-Q4_K_M.gguf` -> `Q4_K_M` (the quant stage's naming)."""
    return path.stem.removeprefix("model-")


def heldout_prompt(corpus: Path, llm: Any, n_tokens: int) -> list[int]:
    """The first `n_tokens` tokens of the held-out split (valid.txt), tokenized by llama.cpp."""
    text = (corpus / "valid.txt").read_text(encoding="utf-8", errors="replace")
    for chars in (4 * n_tokens, 16 * n_tokens, len(text)):
        ids = llm.tokenize(text[:chars].encode(), add_bos=False, special=False)
        if len(ids) >= n_tokens:
            return list(ids[:n_tokens])
    raise SystemExit(f"the held-out split has only {len(ids)} tokens, not {n_tokens}")


def time_tier(llm: Any, prompt: list[int], new_tokens: int) -> dict[str, float]:
    """One prompt pass then greedy generation of `new_tokens`; wall and llama.cpp times."""
    import llama_cpp

    llm.reset()  # n_tokens = 0: no prefix reuse, the whole prompt is evaluated again
    llama_cpp.llama_perf_context_reset(llm.ctx)
    gen = llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
    t0 = time.perf_counter()
    next(gen)  # evaluates the prompt, samples the first new token
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):  # each step evaluates the previous token, samples one
        next(gen)
    t2 = time.perf_counter()
    gen.close()
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return {
        "prompt_tok_s": len(prompt) / (t1 - t0),
        "gen_tok_s": (new_tokens - 1) / (t2 - t1),
        "cpp_prompt_tok_s": perf.n_p_eval / perf.t_p_eval_ms * 1000 if perf.t_p_eval_ms else 0,
        "cpp_gen_tok_s": perf.n_eval / perf.t_eval_ms * 1000 if perf.t_eval_ms else 0,
    }


def gguf_throughput(files: Sequence[Path], corpus: Path, *, prompt_tokens: int,
                    new_tokens: int, repeats: int, threads: int) -> dict[str, Any]:
    """tokens/s of each tier (f32 first) with `threads` threads, median of `repeats`, and the
    ratio to f32."""
    import llama_cpp

    tiers = sorted(files, key=lambda p: (tier_name(p) != "F32", p.name))
    results: list[dict[str, Any]] = []
    prompt: list[int] | None = None
    n_ctx = 0
    for path in tiers:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=0, n_threads=threads,
                              n_threads_batch=threads, n_batch=512, seed=0, verbose=False)
        n_ctx = llm.n_ctx()
        if prompt is None:  # one prompt for every tier: they share the tokenizer
            if prompt_tokens + new_tokens > n_ctx:
                raise SystemExit(f"--prompt-tokens + --gen-tokens = {prompt_tokens + new_tokens}"
                                 f" does not fit the model's context of {n_ctx}")
            prompt = heldout_prompt(corpus, llm, prompt_tokens)
        time_tier(llm, prompt, min(new_tokens, 8))  # warm-up, untimed
        runs = [time_tier(llm, prompt, new_tokens) for _ in range(repeats)]
        gen = [r["gen_tok_s"] for r in runs]
        results.append({"tier": tier_name(path), "size_mb": round(path.stat().st_size / 1e6, 2),
                        **{k: round(_median([r[k] for r in runs]), 1) for k in runs[0]},
                        "gen_tok_s_min": round(min(gen), 1), "gen_tok_s_max": round(max(gen), 1),
                        "runs": [{k: round(v, 1) for k, v in r.items()} for r in runs]})
        llm.close()
        del llm
        gc.collect()
    base = next((r for r in results if r["tier"] == "F32"), results[0])
    for r in results:
        for key in ("prompt_tok_s", "gen_tok_s"):
            r[f"{key}_vs_f32"] = round(r[key] / base[key], 2) if base[key] else None
    return {"threads": threads, "n_ctx": n_ctx, "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens, "repeats": repeats, "tiers": results}


# --- output -----------------------------------------------------------------------------------

def print_machine(info: Mapping[str, Any]) -> None:
    print("== Machine")
    for key, value in info.items():
        print(f"{key:<18} {value}")
    print(flush=True)


def print_overhead(s: Mapping[str, Any], repeats: int) -> None:
    print(f"== Stages: median of {repeats} (foundry = forge/run on SQLite; direct = "
          f"executor.run with a no-op reporter)")
    head = (f"{'stage':<16} {'direct s':>9} {'foundry: executor s':>20} {'stage span s':>13} "
            f"{'overhead s':>11} {'overhead':>9} {'in progress s':>14} {'CPU s d/f':>12}  same")
    print(head)
    print("-" * len(head))
    for st in s["stages"]:
        pct = f"{st['overhead_pct']:+.1f}%" if st["overhead_pct"] is not None else "-"
        cpu = f"{st['direct_cpu_s']:.1f}/{st['foundry_cpu_s']:.1f}"
        print(f"c{st['cycle']} {st['type']:<13} {st['direct_s']:9.2f} "
              f"{st['foundry_executor_s']:20.2f} {st['foundry_span_s']:13.2f} "
              f"{st['overhead_s']:+11.2f} {pct:>9} {st['foundry_progress_s']:14.3f} {cpu:>12}  "
              f"{'yes' if st['same_output'] else 'NO'}")
    print(f"{'rest of forge/run':<16} {'':>9} {'':>20} {s['rest_of_forge_run_s']:13.2f} "
          f"{s['rest_of_forge_run_s']:+11.2f}")
    print(f"{'total':<16} {s['direct_total_s']:9.2f} {'':>20} {s['foundry_total_s']:13.2f} "
          f"{s['overhead_s']:+11.2f} {s['overhead_pct']:+8.1f}% {'':>14} "
          f"{s['direct_cpu_s']:.1f}/{s['foundry_cpu_s']:.1f}")
    print("(in progress s: the reporter's calls inside the stage; CPU: this process and its "
          "children, direct/foundry)")
    ok = "met" if s["target_met"] else "MISSED"
    print(f"\noverhead {s['overhead_pct']:+.2f} % of the direct wall time (target < "
          f"{s['target_pct']:g} %: {ok}); per repeat: "
          f"{', '.join(f'{p:+.1f}%' for p in s['overhead_pct_per_repeat'])}")
    print(f"the foundry's own time (run events, reporter, blob store, source, seal): "
          f"{s['foundry_own_s']:.2f} s = {s['foundry_own_pct']:.2f} % of direct; CPU overhead "
          f"{s['cpu_overhead_pct']} %")
    print(f"runs: foundry {s['foundry_runs_s']} s, direct {s['direct_runs_s']} s; "
          f"CPU (process + children) foundry {s['foundry_cpu_s']:.1f} s, direct "
          f"{s['direct_cpu_s']:.1f} s; run events {s['events_per_run']}, written in "
          f"{s['run_events_s']:.2f} s; blob store {s['blob_store_s']:.2f} s")
    if not s["same_outputs"]:
        print("WARNING: the two paths did not produce the same stage outputs")
    print(flush=True)


def print_gguf(g: Mapping[str, Any]) -> None:
    print(f"== GGUF tiers in llama.cpp: {g['threads']} thread(s), n_ctx {g['n_ctx']}, prompt "
          f"{g['prompt_tokens']} held-out tokens, {g['new_tokens']} greedy new tokens (EOS "
          f"ignored), median of {g['repeats']}")
    head = (f"{'tier':<8} {'size MB':>8} {'prompt tok/s':>13} {'x f32':>6} {'gen tok/s':>10} "
            f"{'x f32':>6} {'gen min-max':>12}   llama.cpp counters: prompt / gen tok/s")
    print(head)
    print("-" * len(head))
    for t in g["tiers"]:
        spread = f"{t['gen_tok_s_min']:.0f}-{t['gen_tok_s_max']:.0f}"
        print(f"{t['tier']:<8} {t['size_mb']:8.2f} {t['prompt_tok_s']:13.0f} "
              f"{t['prompt_tok_s_vs_f32']:6.2f} {t['gen_tok_s']:10.0f} "
              f"{t['gen_tok_s_vs_f32']:6.2f} {spread:>12}   {t['cpp_prompt_tok_s']:.0f} / "
              f"{t['cpp_gen_tok_s']:.0f}")
    print(flush=True)


# --- main -------------------------------------------------------------------------------------

def raw(run: Mapping[str, Any]) -> dict[str, Any]:
    """One run's timings for the JSON line (no metrics, no file paths)."""
    drop = {"metrics", "files", "output_hash"}
    return {**{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()
               if k != "stages"},
            "stages": [{k: round(v, 3) if isinstance(v, float) else v
                        for k, v in st.items() if k not in drop} for st in run["stages"]]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="pipelines per mode (default 2)")
    p.add_argument("--tok-repeats", type=int, default=3, help="timed runs per GGUF tier")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="llama.cpp thread counts to time, each in turn (default 2 1)")
    p.add_argument("--inputs", type=Path, default=None,
                   help="where the demo's corpus and model are (default: the demo's .foundry)")
    p.add_argument("--tmpdir", type=Path, default=None, help="parent of the temp dirs")
    p.add_argument("--executors", choices=["real", "fake"], default="real",
                   help="fake: the deterministic fake stages, a smoke test of this script")
    p.add_argument("--no-gguf", action="store_true", help="skip the llama.cpp throughput")
    p.add_argument("--json", action="store_true", help="print a final JSON line")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.tok_repeats < 1 or args.gen_tokens < 2:
        p.error("--repeats and --tok-repeats must be >= 1, --gen-tokens >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    import structlog

    args = parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    info = base_machine_info()
    info.update({f: version(f) for f in ("torch", "transformers", "peft", "gguf",
                                         "llama-cpp-python")})
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    load_start = load_1min()
    print_machine(info)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.tmpdir))
    try:
        if args.executors == "real":
            recipe, corpus = real_recipe(args.inputs)
            registry = foundry.executors.real.build_registry()
            warm_up(registry.source_resolver(recipe["source"]))
        else:
            from foundry.executors.fake import build_fake_registry

            os.environ.setdefault("FOUNDRY_FAKE_MODELS", str(tmp / "fake-models"))
            recipe, corpus = fake_recipe(), None
            registry = build_fake_registry(sleep_seconds=0.0)
        foundry_runs: list[dict[str, Any]] = []
        direct_runs: list[dict[str, Any]] = []
        pinned: dict[str, Any] | None = None
        for rep in range(args.repeats):
            order = ("foundry", "direct") if rep % 2 == 0 else ("direct", "foundry")
            for mode in order:
                if mode == "foundry":
                    r = run_foundry(recipe, registry, tmp / f"foundry-{rep}")
                    pinned = pinned or r["recipe"]
                    del r["recipe"]
                    foundry_runs.append(r)
                    shutil.rmtree(tmp / f"foundry-{rep}", ignore_errors=True)
                else:
                    assert pinned is not None  # the first repeat runs the foundry first
                    r = run_direct(pinned, registry, tmp / "direct")
                    direct_runs.append(r)
                print(f"repeat {rep + 1} {mode:<8} {r['total_s']:7.1f} s   load {loadavg()}",
                      flush=True)
        print()
        summary = summarize(foundry_runs, direct_runs)
        print_overhead(summary, args.repeats)
        gguf: list[dict[str, Any]] | None = None
        quant = next((s for s in direct_runs[-1]["stages"] if s["type"] == "quant"), None)
        if args.executors == "real" and not args.no_gguf and quant and corpus is not None:
            files = [Path(f) for f in quant["files"] if f.endswith(".gguf")]
            gguf = []
            for threads in args.threads:
                gguf.append(gguf_throughput(files, corpus, prompt_tokens=args.prompt_tokens,
                                            new_tokens=args.gen_tokens,
                                            repeats=args.tok_repeats, threads=threads))
                print_gguf(gguf[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["loadavg_at_end"] = loadavg()
    load_end = load_1min()
    busy = [x for x in (load_start, load_end) if x is not None and x > CONTENTION_LOAD]
    print(f"load average at start {info['loadavg_at_start']}, at end {info['loadavg_at_end']}"
          + (f": above {CONTENTION_LOAD}, these figures are under contention" if busy else ""))
    metrics = {s["type"]: s["metrics"] for s in foundry_runs[0]["stages"]}
    ppl = next((b for b in metrics.get("eval", {}).get("benchmarks", [])
                if b.get("name") == "perplexity"), None)
    if args.json:
        print(json.dumps({
            "bench": "pipeline", "machine": info,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "overhead": summary, "gguf": gguf,
            "runs": [raw(r) for r in [*foundry_runs, *direct_runs]],
            "perplexity": {"base": ppl.get("baseScore"), "forged": ppl.get("score")}
            if ppl else None,
        }, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
