"""foundry-code-mini: twelve short functions (codebench/problems.json) completed greedily and
run, prompt + completion + asserts, through `foundry.executors.real.sandbox` (the trailing
asserts are judged there, outside the sandbox); pass@1 = passed / total."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.real.common import max_positions
from foundry.executors.real.sandbox import run_candidate

PROBLEMS_FILE = Path(__file__).with_name("codebench") / "problems.json"
CODE_MAX_NEW_TOKENS, CODE_TIMEOUT_S = 64, 5.0
BOUNDARY_PATTERN = r"\n[ \t]*\n|\n(?=\S)"  # a blank line, or a new top-level statement
_BOUNDARY = re.compile(BOUNDARY_PATTERN)


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
    task_ids: list[str]
    wall_seconds: float


def code_bench(model: Any, tokenizer: Any, work_dir: Path, out_name: str) -> CodeScore:
    """Complete every problem, run it in the sandbox, write the samples file."""
    started = time.perf_counter()
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
                     [str(r["completion"]) for r in rows], [str(r["id"]) for r in rows],
                     time.perf_counter() - started)


def problems_file_hash() -> str:
    return "sha256:" + hashlib.sha256(PROBLEMS_FILE.read_bytes()).hexdigest()
