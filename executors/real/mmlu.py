"""MMLU and MMLU-Pro: multiple choice, scored by the log-likelihood of each answer letter.

The prompt is the one lm-evaluation-harness uses for MMLU ("The following are multiple choice
questions (with answers) about {subject}." then the examples, then the question with lettered
choices and "Answer:"). The model's answer is the letter whose continuation (" A", " B", ...)
has the highest summed log-probability after the prompt; the score is the accuracy.

Rows are objects with `question`, the choices as `choices` (MMLU) or `options` (MMLU-Pro), and
the answer as a letter or a 0-based index in `answer` (or `answer_index`); `subject` or
`category` groups them; `id`/`question_id` names them (else "<benchmark>/<row number>").
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError
from foundry.executors.real.data_benchmarks import DataPlan, DataScore, Problem, Runner

LETTERS = string.ascii_uppercase[:16]
PROMPT_TEMPLATE = ("The following are multiple choice questions (with answers) about "
                   "{subject}.\n\n{examples}{question}\n{choices}\nAnswer:")


def parse_row(name: str, index: int, row: Mapping[str, Any], path: Path) -> Problem:
    where = f"{name} dataFile {path}, row {index + 1}"
    question = row.get("question")
    choices = row.get("choices", row.get("options"))
    if not isinstance(question, str) or not question.strip():
        raise ExecutorError(f"{where}: `question` must be a non-empty string")
    if (not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS)
            or not all(isinstance(c, str) for c in choices)):
        raise ExecutorError(f"{where}: `choices` (or `options`) must be 2 to {len(LETTERS)} "
                            "strings")
    answer = _answer_letter(row, len(choices))
    if answer is None:
        raise ExecutorError(f"{where}: `answer` must be one of the choice letters "
                            f"{LETTERS[:len(choices)]} or a 0-based index, got "
                            f"{row.get('answer', row.get('answer_index'))!r}")
    task_id = row.get("id", row.get("question_id"))
    subject = row.get("subject", row.get("category")) or "general knowledge"
    return Problem(task_id=str(task_id) if task_id is not None else f"{name}/{index}",
                   group=str(subject), question=question.strip(),
                   choices=tuple(c.strip() for c in choices), answer=answer)


def _answer_letter(row: Mapping[str, Any], n: int) -> str | None:
    for key in ("answer", "answer_index"):
        value = row.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, int) and 0 <= value < n:
            return LETTERS[value]
        if isinstance(value, str) and value.strip().upper() in LETTERS[:n]:
            return value.strip().upper()
    return None


def _block(p: Problem) -> str:
    choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(p.choices))
    return f"{p.question}\n{choices}\nAnswer:"


def prompt_of(p: Problem, examples: Sequence[Problem]) -> str:
    subject = p.group.replace("_", " ")
    shown = "".join(f"{_block(e)} {e.answer}\n\n" for e in examples)
    return (f"The following are multiple choice questions (with answers) about {subject}."
            f"\n\n{shown}{_block(p)}")


def choice_logprobs(model: Any, tokenizer: Any, prompt: str,
                    continuations: Sequence[str]) -> list[float]:
    """Summed log-probability of each continuation after `prompt`. The continuation's tokens
    are those of prompt+continuation past the prompt's (lm-evaluation-harness's split), so a
    merge across the boundary is scored as the model would see it. When every continuation
    is one token after an unchanged prompt, one forward pass scores them all."""
    import torch

    device = next(model.parameters()).device
    context = tokenizer(prompt)["input_ids"]
    wholes = [tokenizer(prompt + c)["input_ids"] for c in continuations]
    with torch.inference_mode():
        if all(len(w) == len(context) + 1 and w[:len(context)] == context for w in wholes):
            logits = model(input_ids=torch.tensor([context], device=device)).logits[0, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            return [float(logp[w[-1]]) for w in wholes]
        out = []
        for whole in wholes:
            start = _common_prefix(context, whole)
            if start == len(whole):
                out.append(-math.inf)  # the continuation added no token: it cannot be chosen
                continue
            ids = torch.tensor([whole], device=device)
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            out.append(float(sum(logp[i - 1, whole[i]] for i in range(max(start, 1),
                                                                       len(whole)))))
        return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run_multiple_choice(model: Any, tokenizer: Any, plan: DataPlan) -> DataScore:
    """Every problem of the plan answered by log-likelihood; accuracy and one row each."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    correct = 0
    for p in plan.problems:
        letters = LETTERS[:len(p.choices)]
        scores = choice_logprobs(model, tokenizer, prompt_of(p, plan.shots.get(p.group, [])),
                                 [f" {letter}" for letter in letters])
        predicted = letters[max(range(len(scores)), key=scores.__getitem__)]
        correct += predicted == p.answer
        rows.append({"taskId": p.task_id, "subject": p.group, "answer": p.answer,
                     "predicted": predicted, "correct": predicted == p.answer,
                     "logprobs": {letter: round(s, 6) for letter, s in zip(letters, scores,
                                                                           strict=True)}})
    return DataScore(round(correct / len(plan.problems), 6), correct, rows,
                     time.perf_counter() - started)


RUNNER = Runner(parse=parse_row, run=run_multiple_choice, metric="acc",
                prompt_template=PROMPT_TEMPLATE,
                sampling=lambda _settings: {"method": "loglikelihood",
                                            "continuations": "letters"})
