"""GSM8K: grade-school math word problems, greedy generation, the final number exact-matched.

The prompt is lm-evaluation-harness's ("Question: {question}\\nAnswer:"), each example followed
by its worked answer. Generation is greedy and stops at the next "Question:" or a blank line.
The model's answer is the number after "####" when it writes one (the data set's own
convention), else the last number in its text; the reference is the number after "####" in the
row's `answer`. Both are compared as decimals after dropping thousands separators and a leading
"$" ("1,000" = "1000.00"). Rows are objects with `question` and `answer`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError
from foundry.executors.real.data_benchmarks import DataPlan, DataScore, Problem, Runner
from foundry.executors.real.generation import cut_at, generate_texts

PROMPT_TEMPLATE = "{examples}Question: {question}\nAnswer:"
STOP_SEQUENCES = ("Question:", "\n\n")
_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\$?\s*[\d,]*\.?\d+")


def parse_row(name: str, index: int, row: Mapping[str, Any], path: Path) -> Problem:
    where = f"{name} dataFile {path}, row {index + 1}"
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ExecutorError(f"{where}: `question` must be a non-empty string")
    if not isinstance(answer, str):
        raise ExecutorError(f"{where}: `answer` must be the worked answer, ending '#### <n>'")
    final = _FINAL.search(answer)
    number = normalize(final.group(1)) if final else None
    if number is None:
        raise ExecutorError(f"{where}: `answer` has no final '#### <number>'")
    return Problem(task_id=f"{name}/{index}", group="", question=question.strip(),
                   choices=(), answer=number, solution=answer.strip())


def normalize(text: str) -> str | None:
    """"1,000" / "$1000.00" / "1000." -> "1000"; None when it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return format(value.normalize(), "f") if value != 0 else "0"


def extract(completion: str) -> str | None:
    """The model's final number: after "####" if it wrote one, else the last number."""
    final = _FINAL.search(completion)
    if final:
        return normalize(final.group(1))
    numbers = _NUMBER.findall(completion)
    return normalize(numbers[-1]) if numbers else None


def cut(text: str) -> tuple[str, bool]:
    return cut_at(text, STOP_SEQUENCES)


def prompt_of(p: Problem, examples: Sequence[Problem]) -> str:
    shown = "".join(f"Question: {e.question}\nAnswer: {e.solution}\n\n" for e in examples)
    return f"{shown}Question: {p.question}\nAnswer:"


def run_gsm8k(model: Any, tokenizer: Any, plan: DataPlan) -> DataScore:
    """Every problem of the plan answered greedily; exact-match accuracy and one row each."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    correct = 0
    examples = plan.shots.get("", [])
    for p in plan.problems:
        [completion] = generate_texts(model, tokenizer, prompt_of(p, examples),
                                      max_new_tokens=plan.settings.max_new_tokens, cut=cut)
        predicted = extract(completion)
        correct += predicted == p.answer
        rows.append({"taskId": p.task_id, "answer": p.answer, "predicted": predicted,
                     "correct": predicted == p.answer, "completion": completion})
    return DataScore(round(correct / len(plan.problems), 6), correct, rows,
                     time.perf_counter() - started)


RUNNER = Runner(parse=parse_row, run=run_gsm8k, metric="exact_match",
                prompt_template=PROMPT_TEMPLATE,
                sampling=lambda settings: {"greedy": True,
                                           "maxNewTokens": settings.max_new_tokens,
                                           "stop": list(STOP_SEQUENCES)})
