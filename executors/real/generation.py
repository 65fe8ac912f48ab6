"""Text generation through transformers, stopped where a benchmark's own rule cuts the text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from foundry.executors.real.common import max_positions

# text generated so far -> (the text kept, whether a stop was found)
Cut = Callable[[str], tuple[str, bool]]


def cut_at(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """(the text before the first of `stops`, whether one was found): a benchmark's Cut."""
    at = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text, False) if at < 0 else (text[:at], True)


def generate_texts(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int, cut: Cut,
                   samples: int = 1, temperature: float = 1.0, top_p: float = 1.0
                   ) -> list[str]:
    """`samples` completions of `prompt` (greedy when 1, else sampled with temperature/top_p),
    generation stopping for each row once `cut` finds its stop, every text cut by it."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
    prompt_len = ids.shape[1]
    budget = min(max_new_tokens, max_positions(model) - prompt_len)
    if budget <= 0:
        return [""] * samples

    class _Stopped(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:  # noqa: ARG002
            done = [cut(tokenizer.decode(row[prompt_len:], skip_special_tokens=True))[1]
                    for row in input_ids]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extra: dict[str, Any] = ({"do_sample": True, "temperature": temperature, "top_p": top_p}
                             if samples > 1 else {"do_sample": False})
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=budget, pad_token_id=pad,
                             num_return_sequences=samples,
                             stopping_criteria=StoppingCriteriaList([_Stopped()]), **extra)
    return [cut(tokenizer.decode(row[prompt_len:], skip_special_tokens=True))[0] for row in out]
