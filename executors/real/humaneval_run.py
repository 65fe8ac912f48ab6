"""Run HumanEval for one model: completions (transformers), sandboxed judgement, pass@k.

`Settings.from_def` reads a stage's benchmark entry: `subset`, `limit`, `samples` (n per
problem; 1 = greedy), `k` (the pass@k to report besides pass@1), `temperature`/`topP` (only
when samples > 1), `maxNewTokens`, `timeoutS` (per candidate), `dataFile` (a local
HumanEval.jsonl[.gz] instead of the package's), `gguf` (a quant type such as "Q4_K_M": the
forged model's completions come from that GGUF tier of this run through llama.cpp,
gguf_generate.py, instead of from its safetensors through transformers). Every candidate
runs in the bubblewrap sandbox with the sandbox's time and memory limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError
from foundry.executors.real.generation import generate_texts
from foundry.executors.real.humaneval import (
    STOP_SEQUENCES,
    DataSet,
    judged_program,
    mean_pass_at_k,
    truncate,
)
from foundry.executors.real.sandbox import run_candidate

DEFAULT_MAX_NEW_TOKENS, DEFAULT_TIMEOUT_S = 256, 10.0
# prompts -> the completions of each (settings.samples per prompt), cut at the stop sequences
Completer = Callable[[Sequence[str]], list[list[str]]]


def entry_int(entry: Mapping[str, Any], key: str, default: int | None, low: int, *,
              benchmark: str = "humaneval") -> int | None:
    """A benchmark entry's integer field (`default` when absent); ExecutorError names the
    benchmark and the field when it is not an integer >= `low`."""
    value = entry.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ExecutorError(f"{benchmark} {key} must be an integer >= {low}, got {value!r}")
    return value


def _float(entry: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise ExecutorError(f"humaneval {key} must be a number in ({low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Settings:
    """What decides a HumanEval score, besides the model and the data."""

    subset: str | None
    limit: int | None
    samples: int
    ks: tuple[int, ...]
    temperature: float
    top_p: float
    max_new_tokens: int
    timeout_s: float
    gguf: str | None = None

    @classmethod
    def from_def(cls, entry: Mapping[str, Any]) -> Settings:
        samples = entry_int(entry, "samples", 1, 1) or 1
        raw_k = entry.get("k", [])
        ks = raw_k if isinstance(raw_k, list) else [raw_k]
        if any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= samples
               for k in ks):
            raise ExecutorError(f"humaneval k must be integers in 1..samples ({samples}), "
                                f"got {raw_k!r}")
        subset = entry.get("subset")
        gguf = entry.get("gguf")
        if gguf is not None and (not isinstance(gguf, str) or not gguf.strip()):
            raise ExecutorError(f"humaneval gguf must be a quant type such as 'Q4_K_M', "
                                f"got {gguf!r}")
        return cls(subset=str(subset) if subset else None, limit=entry_int(entry, "limit", None, 1),
                   samples=samples, ks=tuple(sorted({1, *ks})),
                   temperature=_float(entry, "temperature", 0.8, 0.0, 2.0),
                   top_p=_float(entry, "topP", 0.95, 0.0, 1.0),
                   max_new_tokens=entry_int(entry, "maxNewTokens", DEFAULT_MAX_NEW_TOKENS, 1)
                   or DEFAULT_MAX_NEW_TOKENS,
                   timeout_s=_float(entry, "timeoutS", DEFAULT_TIMEOUT_S, 0.0, 120.0),
                   gguf=gguf.strip().upper() if gguf else None)

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters as the ledger records them."""
        base: dict[str, Any] = {"samples": self.samples, "maxNewTokens": self.max_new_tokens,
                                "stop": list(STOP_SEQUENCES), "timeoutS": self.timeout_s}
        if self.samples == 1:
            return {**base, "greedy": True}
        return {**base, "greedy": False, "temperature": self.temperature, "topP": self.top_p,
                "k": list(self.ks)}


def generate(model: Any, tokenizer: Any, prompt: str, settings: Settings) -> list[str]:
    """`settings.samples` completions of `prompt`, each cut at the first stop sequence."""
    return generate_texts(model, tokenizer, prompt, max_new_tokens=settings.max_new_tokens,
                          cut=truncate, samples=settings.samples,
                          temperature=settings.temperature, top_p=settings.top_p)


def transformers_completer(model: Any, tokenizer: Any, settings: Settings) -> Completer:
    return lambda prompts: [generate(model, tokenizer, p, settings) for p in prompts]


def gguf_completer(path: Path, label: str, settings: Settings, seed: int,
                   log_file: Path) -> Completer:
    from foundry.executors.real.gguf_generate import completions

    def complete(prompts: Sequence[str]) -> list[list[str]]:
        got = completions(path, label, prompts, samples=settings.samples,
                          greedy=settings.samples == 1, temperature=settings.temperature,
                          top_p=settings.top_p, max_tokens=settings.max_new_tokens,
                          stop=STOP_SEQUENCES, seed=seed, log_file=log_file)
        return [[truncate(t)[0] for t in texts] for texts in got]

    return complete


@dataclass(frozen=True)
class HumanEvalScore:
    """pass@k per k, the per-candidate rows (for the samples file), the wall time; `model`
    and `runtime` when the completions came from another file than the stage's model (a
    GGUF tier through llama.cpp)."""

    scores: dict[int, float | None]
    rows: list[dict[str, Any]]
    unjudged: list[str]
    wall_seconds: float
    model: dict[str, str] | None = None
    runtime: str | None = None


def run_humaneval(complete: Completer, problems: list[dict[str, Any]],
                  settings: Settings, work_dir: Path) -> HumanEvalScore:
    """Generate, judge every candidate in the sandbox, estimate pass@k."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    counts: list[tuple[int, int]] = []
    unjudged: list[str] = []
    answers = complete([str(p["prompt"]) for p in problems])
    for problem, candidates in zip(problems, answers, strict=True):
        passed = 0
        for sample, completion in enumerate(candidates):
            program, probes = judged_program(problem, completion)
            if probes == 0 and sample == 0:
                unjudged.append(str(problem["task_id"]))
            result = run_candidate(program, timeout_s=settings.timeout_s,
                                   work_dir=work_dir / "sandbox")
            passed += result.passed
            rows.append({"taskId": problem["task_id"], "sample": sample,
                         "completion": completion, "passed": result.passed,
                         "error": result.error, "seconds": result.seconds})
        counts.append((settings.samples, passed))
    scores = {k: mean_pass_at_k(counts, k) for k in settings.ks}
    return HumanEvalScore(scores, rows, unjudged, time.perf_counter() - started)


def dataset_record(data: DataSet) -> dict[str, Any]:
    """The data set as the ledger records it."""
    return {"name": "openai_humaneval", "source": data.source, "file": data.path.name,
            "sha256": data.sha256, "size": len(data.problems)}
