"""The real `eval` stage: held-out perplexity and an execution-scored code benchmark.

`perplexity` is always measured: the forged model (`ctx.input_dir`) and the base model
(`ctx.base_model_dir`) score the same held-out windows of the recipe's corpus, cut by the forged
model's tokenizer (the base must share its vocabulary). `foundry-code-mini` completes the twelve
short functions in `codebench/problems.json` greedily and runs each prompt + completion + asserts
through `foundry.executors.real.sandbox` (bubblewrap; the trailing asserts are judged here,
outside it), pass@1 = passed / total.
Per-window and per-problem records are written as JSON Lines and returned as files; each
benchmark's `resultHash` is the SHA-256 of its samples file.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.common import load_model, max_positions, set_seed
from foundry.executors.real.data import corpus_for, token_windows
from foundry.executors.real.sandbox import containment, require_sandbox, run_candidate

KNOWN_BENCHMARKS = frozenset({"perplexity", "foundry-code-mini"})
PROBLEMS_FILE = Path(__file__).with_name("codebench") / "problems.json"
PPL_SEQ_LEN, PPL_MAX_WINDOWS, PPL_BATCH = 128, 64, 8
CODE_MAX_NEW_TOKENS, CODE_TIMEOUT_S, N_SAMPLES = 64, 5.0, 3
_BOUNDARY = re.compile(r"\n[ \t]*\n|\n(?=\S)")  # a blank line, or a new top-level statement


def benchmark_names(stage: Mapping[str, Any]) -> list[str]:
    """"perplexity" first, then the stage's benchmarks; unknown names raise ExecutorError."""
    names = ["perplexity"]
    for entry in stage.get("benchmarks") or []:
        name = str(entry.get("name", "")) if isinstance(entry, Mapping) else str(entry)
        if name not in KNOWN_BENCHMARKS:
            raise ExecutorError(
                f"unknown benchmark {name!r}; this worker knows {sorted(KNOWN_BENCHMARKS)}")
        if name not in names:
            names.append(name)
    return names


def cut_at_boundary(text: str) -> tuple[str, bool]:
    """(the completion up to a blank line or a new top-level line, whether one was reached)."""
    match = _BOUNDARY.search("\n" + text)
    if match is None:
        return text.rstrip(), False
    return text[: max(0, match.start() - 1)].rstrip(), True


def load_problems() -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = json.loads(PROBLEMS_FILE.read_text("utf-8"))["problems"]
    return problems


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write rows as canonical JSON Lines; return "sha256:<hex>" of the file."""
    data = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(data, encoding="utf-8")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


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


def complete(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """Greedy completion of `prompt`, cut at a blank line or a new top-level statement."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    enc = tokenizer(prompt, return_tensors="pt")
    ids = enc["input_ids"].to(next(model.parameters()).device)
    prompt_len = ids.shape[1]
    budget = min(max_new_tokens, max_positions(model) - prompt_len)
    if budget <= 0:
        return ""

    class _AtBoundary(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:  # noqa: ARG002
            text = tokenizer.decode(input_ids[0, prompt_len:], skip_special_tokens=True)
            done = cut_at_boundary(text)[1]
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=budget, do_sample=False, pad_token_id=pad,
                             stopping_criteria=StoppingCriteriaList([_AtBoundary()]))
    text = tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)
    return cut_at_boundary(text)[0]


@dataclass(frozen=True)
class CodeScore:
    score: float
    path: Path
    result_hash: str
    completions: list[str]


def code_bench(model: Any, tokenizer: Any, work_dir: Path, out_name: str) -> CodeScore:
    """Complete every problem, run it in the sandbox, write the samples file."""
    rows: list[dict[str, Any]] = []
    for problem in load_problems():
        completion = complete(model, tokenizer, problem["prompt"], CODE_MAX_NEW_TOKENS)
        program = problem["prompt"] + completion + "\n\n" + "\n".join(problem["tests"]) + "\n"
        result = run_candidate(program, timeout_s=CODE_TIMEOUT_S, work_dir=work_dir / "sandbox")
        rows.append({"id": problem["id"], "prompt": problem["prompt"], "completion": completion,
                     "passed": result.passed, "error": result.error})
    path = work_dir / out_name
    digest = write_jsonl(path, rows)
    passed = sum(1 for r in rows if r["passed"])
    return CodeScore(round(passed / len(rows), 6), path, digest,
                     [str(r["completion"]) for r in rows])


def _samples_name(defs: Mapping[str, Mapping[str, Any]], name: str, key: str,
                  default: str) -> str:
    given = defs.get(name, {}).get(key)
    return Path(str(given)).name if given else default


class EvalExecutor:
    """Perplexity against the base model, plus the requested benchmarks."""

    stage_type = "eval"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        names = benchmark_names(ctx.stage)
        defs = {str(b.get("name")): b for b in ctx.stage.get("benchmarks") or []
                if isinstance(b, Mapping)}
        compare = bool(ctx.stage.get("compareToBase", True))
        code_name = "foundry-code-mini"
        if code_name in names:
            require_sandbox()  # before minutes of model loading, not after
        set_seed(ctx.seed)
        corpus = corpus_for(ctx)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)

        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        seq_len = min(PPL_SEQ_LEN, max_positions(model))
        windows = token_windows(tokenizer, corpus, split="heldout", seq_len=seq_len,
                                max_windows=PPL_MAX_WINDOWS, seed=ctx.seed)
        final_sums = window_nll(model, windows)
        reporter.progress(0.25, f"forged model perplexity on {windows.shape[0]} windows")
        prompts = [p["prompt"] for p in load_problems()[:N_SAMPLES]]
        code = None
        if code_name in names:
            code = code_bench(model, tokenizer, ctx.work_dir,
                              _samples_name(defs, code_name, "samplesPath", f"{code_name}.jsonl"))
            completions = code.completions[:N_SAMPLES]
        else:
            completions = [complete(model, tokenizer, p, CODE_MAX_NEW_TOKENS) for p in prompts]
        reporter.progress(0.5, "forged model benchmarks done")
        del model
        gc.collect()

        base, base_tok = load_model(ctx.base_model_dir, device=ctx.device)
        if base_tok.get_vocab() != tokenizer.get_vocab():
            raise ExecutorError("the base and forged models have different vocabularies: "
                                "their perplexities on the same windows are not comparable")
        base_sums = window_nll(base, windows)
        reporter.progress(0.75, "base model perplexity")
        base_code = None
        if code is not None and compare:
            base_code = code_bench(base, base_tok, ctx.work_dir, _samples_name(
                defs, code_name, "baseSamplesPath", f"{code_name}-base.jsonl"))
            base_completions = base_code.completions[:N_SAMPLES]
        else:
            base_completions = [complete(base, base_tok, p, CODE_MAX_NEW_TOKENS) for p in prompts]
        del base
        gc.collect()

        final_ppl = perplexity_of(final_sums, seq_len)
        base_ppl = perplexity_of(base_sums, seq_len)
        ppl_file = ctx.work_dir / "perplexity-windows.jsonl"
        ppl_hash = write_jsonl(ppl_file, [
            {"window": i, "predictedTokens": seq_len - 1, "nll": round(f, 6),
             "baseNll": round(b, 6)} for i, (f, b) in enumerate(zip(final_sums, base_sums,
                                                                    strict=True))])
        files = [ppl_file]
        benchmarks: list[dict[str, Any]] = [{
            "name": "perplexity", "metric": "perplexity", "score": round(final_ppl, 4),
            "baseScore": round(base_ppl, 4), "delta": round(final_ppl - base_ppl, 4),
            "samplesPath": ppl_file.name, "resultHash": ppl_hash,
            "metrics": {"windows": len(final_sums), "seqLen": seq_len},
        }]
        if code is not None:
            entry: dict[str, Any] = {
                "name": code_name, "metric": "pass@1", "score": code.score,
                "samplesPath": code.path.name, "resultHash": code.result_hash,
                "metrics": {"problems": len(code.completions), "containment": containment()},
            }
            files.append(code.path)
            if base_code is not None:
                entry.update(baseScore=base_code.score,
                             delta=round(code.score - base_code.score, 6),
                             baseSamplesPath=base_code.path.name,
                             baseResultHash=base_code.result_hash)
                files.append(base_code.path)
            benchmarks.append(entry)

        shutil.copytree(ctx.input_dir, ctx.output_dir, dirs_exist_ok=True)
        reporter.progress(1.0, f"perplexity {base_ppl:.2f} -> {final_ppl:.2f}")
        samples = [{"label": f"{code_name}/{p['id']}", "prompt": p["prompt"], "completion": c,
                    "baselineCompletion": b}
                   for p, c, b in zip(load_problems(), completions, base_completions,
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
