"""The real `eval` stage: held-out perplexity and execution-scored code benchmarks.

`perplexity` is always measured: the forged model (`ctx.input_dir`) and the base model
(`ctx.base_model_dir`) score the same held-out windows of the recipe's corpus, cut by the forged
model's tokenizer (the base must share its vocabulary). `foundry-code-mini` (code_mini.py) and
`humaneval` (humaneval.py, humaneval_run.py) complete problems with each model and judge every
candidate in the bubblewrap sandbox. `mmlu`, `mmlu-pro` (mmlu.py) and `gsm8k` (gsm8k.py) run on
a local `dataFile` the entry names (data_benchmarks.py), hashed into the ledger. Benchmarks this
worker has no runner or data for are refused by name before any model is loaded.
Per-window and per-problem records are written as JSON Lines and returned as files; each
benchmark's `resultHash` is the SHA-256 of its samples file, and its `ledger`
(eval_ledger.py) records how the score was made.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real import eval_entries as entries
from foundry.executors.real.code_mini import (
    CODE_MAX_NEW_TOKENS,
    code_bench,
    complete,
    cut_at_boundary,
    load_problems,
    write_jsonl,
)
from foundry.executors.real.common import load_model, max_positions, set_seed
from foundry.executors.real.data import corpus_for, token_windows
from foundry.executors.real.data_benchmarks import DATA_FILE_BENCHMARKS
from foundry.executors.real.eval_ledger import model_identity, runtime_of
from foundry.executors.real.humaneval_run import (
    Completer,
    HumanEvalScore,
    gguf_completer,
    run_humaneval,
    transformers_completer,
)
from foundry.executors.real.sandbox import require_sandbox

__all__ = ["DATA_FILE_BENCHMARKS", "EvalExecutor", "benchmark_names", "cut_at_boundary",
           "load_problems", "perplexity_of", "window_nll"]

KNOWN_BENCHMARKS = frozenset({"perplexity", "foundry-code-mini", "humaneval"})
# Named by real recipes; no runner here (DATA_FILE_BENCHMARKS: those that run on a local file).
NEEDS_DATA_FILE = frozenset({"arc", "arc-challenge", "hellaswag", "truthfulqa", "winogrande",
                             "mbpp", "bbh", "ifeval"})
PPL_SEQ_LEN, PPL_MAX_WINDOWS, PPL_BATCH = 128, 64, 8
N_SAMPLES = 3
CODE = "foundry-code-mini"


def _refuse_unrunnable(name: str) -> None:
    known = sorted(KNOWN_BENCHMARKS | DATA_FILE_BENCHMARKS)
    if name not in NEEDS_DATA_FILE:
        raise ExecutorError(f"unknown benchmark {name!r}; this worker knows {known}")
    raise ExecutorError(f"benchmark {name!r} cannot run on this machine: its data set is not "
                        f"installed here and this worker has no runner for it; it runs "
                        f"{sorted(KNOWN_BENCHMARKS)}, and {sorted(DATA_FILE_BENCHMARKS)} "
                        f"given a local dataFile")


def benchmark_names(stage: Mapping[str, Any]) -> list[str]:
    """"perplexity" first, then the stage's benchmarks; one it cannot run raises ExecutorError."""
    names = ["perplexity"]
    for entry in stage.get("benchmarks") or []:
        name = str(entry.get("name", "")) if isinstance(entry, Mapping) else str(entry)
        if name not in KNOWN_BENCHMARKS and name not in DATA_FILE_BENCHMARKS:
            _refuse_unrunnable(name)
        if name not in names:
            names.append(name)
    return names


def window_nll(model: Any, windows: Any) -> list[float]:
    """Summed next-token negative log-likelihood of each window (nats)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

    device = next(model.parameters()).device
    sums: list[float] = []
    with torch.inference_mode():
        for start in range(0, windows.shape[0], PPL_BATCH):
            batch = windows[start : start + PPL_BATCH].to(device)
            logits = model(input_ids=batch).logits.float()
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                  batch[:, 1:].reshape(-1), reduction="none")
            sums.extend(nll.view(batch.shape[0], -1).sum(dim=1).tolist())
    return sums


def perplexity_of(sums: list[float], seq_len: int) -> float:
    return math.exp(sum(sums) / (len(sums) * (seq_len - 1)))


def _measure(model: Any, tokenizer: Any, windows: Any, ctx: StageContext,
             plan: entries.Plan, *, base: bool) -> entries.Measured:
    started = time.perf_counter()
    sums = window_nll(model, windows)
    ppl_seconds = time.perf_counter() - started
    benches = not base or plan.compare
    code = None
    if CODE in plan.names and benches:
        code = code_bench(model, tokenizer, ctx.work_dir, plan.samples_name(CODE, base=base))
    human = None
    if plan.human is not None and benches:
        human = _humaneval(model, tokenizer, ctx, plan.human, base=base)
    if code is not None:
        completions = code.completions[:N_SAMPLES]
    else:
        completions = [complete(model, tokenizer, p["prompt"], CODE_MAX_NEW_TOKENS)
                       for p in load_problems()[:N_SAMPLES]]
    data = ({d.name: entries.runner_for(d.name).run(model, tokenizer, d) for d in plan.data}
            if benches else {})
    model_dir = ctx.base_model_dir if base else ctx.input_dir
    return entries.Measured(model_identity(Path(model_dir)), sums, ppl_seconds, code, human,
                            completions, data)




def _humaneval(model: Any, tokenizer: Any, ctx: StageContext, he: entries.HumanEvalPlan, *,
               base: bool) -> HumanEvalScore:
    """HumanEval on the model in hand, or, for the forged model when the entry names `gguf`,
    on that GGUF tier of this run through llama.cpp (the base model has no tier: it runs
    through transformers, and the ledger records each side's runtime and file)."""
    settings = he.settings
    if base or settings.gguf is None:
        complete: Completer = transformers_completer(model, tokenizer, settings)
        return run_humaneval(complete, he.problems, settings, ctx.work_dir)
    from foundry.executors.real.gguf_generate import tier_file

    record = tier_file(list(ctx.extras.get("upstreamFiles") or []), settings.gguf)
    lookup = ctx.extras.get("blobPath")
    if lookup is None:
        raise ExecutorError("humaneval gguf: this worker was given no blob store to read the "
                            "GGUF tier from")
    path, name = Path(lookup(str(record["sha256"]))), str(record["path"])
    complete = gguf_completer(path, name, settings, ctx.seed,
                              ctx.work_dir / "humaneval-llama-cpp.log")
    score = run_humaneval(complete, he.problems, settings, ctx.work_dir)
    return dataclasses.replace(score, runtime=runtime_of("llama-cpp-python"), model={
        "hash": str(record["sha256"]), "format": "gguf", "file": name})


def _entries(context: entries.Context, plan: entries.Plan, final: entries.Measured,
             base: entries.Measured, ppl: tuple[float, float], work_dir: Path
             ) -> tuple[list[dict[str, Any]], list[Path]]:
    """Every results.benchmarks entry of the stage, perplexity first (`ppl`: the forged and
    the base model's), and the samples files they reference (each written here, hashed into
    its entry)."""
    final_ppl, base_ppl = ppl
    ppl_file = work_dir / "perplexity-windows.jsonl"
    ppl_hash = write_jsonl(ppl_file, [
        {"window": i, "predictedTokens": context.seq_len - 1, "nll": round(f, 6),
         "baseNll": round(b, 6)}
        for i, (f, b) in enumerate(zip(final.sums, base.sums, strict=True))])
    benchmarks = [entries.perplexity_entry(context, final, base, final_ppl, base_ppl,
                                           ppl_file, ppl_hash)]
    files = [ppl_file]
    if final.code is not None:
        benchmarks.append(entries.code_entry(context, final, base, files))
    if plan.human is not None and final.human is not None:
        benchmarks.append(entries.humaneval_entry(context, plan, final, base, files))
    benchmarks.extend(entries.data_entry(context, plan, d, final, base, files)
                      for d in plan.data)
    return benchmarks, files


class EvalExecutor:
    """Perplexity against the base model, plus the requested benchmarks."""

    stage_type = "eval"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        plan = entries.plan_of(ctx.stage, benchmark_names(ctx.stage))
        if CODE in plan.names or plan.human is not None:
            require_sandbox()  # before minutes of model loading, not after
        set_seed(ctx.seed)
        corpus = corpus_for(ctx)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)

        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        seq_len = min(PPL_SEQ_LEN, max_positions(model))
        windows = token_windows(tokenizer, corpus, split="heldout", seq_len=seq_len,
                                max_windows=PPL_MAX_WINDOWS, seed=ctx.seed)
        reporter.progress(0.1, f"forged model: {windows.shape[0]} perplexity windows")
        final = _measure(model, tokenizer, windows, ctx, plan, base=False)
        reporter.progress(0.5, "forged model benchmarks done")
        del model
        gc.collect()

        set_seed(ctx.seed)  # the base samples under the same seed as the forged model
        base_model, base_tok = load_model(ctx.base_model_dir, device=ctx.device)
        if base_tok.get_vocab() != tokenizer.get_vocab():
            raise ExecutorError("the base and forged models have different vocabularies: "
                                "their perplexities on the same windows are not comparable")
        base = _measure(base_model, base_tok, windows, ctx, plan, base=True)
        del base_model
        gc.collect()

        final_ppl = perplexity_of(final.sums, seq_len)
        base_ppl = perplexity_of(base.sums, seq_len)
        context = entries.Context(seed=ctx.seed, device=ctx.device, corpus=corpus,
                                  windows=windows, seq_len=seq_len)
        benchmarks, files = _entries(context, plan, final, base, (final_ppl, base_ppl),
                                     ctx.work_dir)

        shutil.copytree(ctx.input_dir, ctx.output_dir, dirs_exist_ok=True)
        reporter.progress(1.0, f"perplexity {base_ppl:.2f} -> {final_ppl:.2f}")
        samples = [{"label": f"{CODE}/{p['id']}", "prompt": p["prompt"], "completion": c,
                    "baselineCompletion": b}
                   for p, c, b in zip(load_problems(), final.completions, base.completions,
                                      strict=False)]
        return StageResult(
            output_dir=ctx.output_dir, files=tuple(files),
            metrics={
                "baselinePerplexity": round(base_ppl, 4),
                "finalPerplexity": round(final_ppl, 4),
                "improvementPct": round((base_ppl - final_ppl) / base_ppl * 100.0, 4),
                "benchmarks": benchmarks,
                "samples": samples,
            },
        )
