"""Importance of each attention KV group in each layer, for structured pruning.

`group_scores` returns `(importance, raw, kind)`: `importance[layer][group]` (higher = keep),
the raw per-group measurement that is reported, and what it measures.

- gradient: first-order Taylor |w * dL/dw| summed over the group's q/k/v rows and o_proj
  columns, accumulated over the calibration batches;
- activation-magnitude: mean |attention output| of the group's query heads (the input of
  o_proj);
- entropy: mean entropy of the group's attention distributions (needs eager attention and
  `output_attentions=True`); the most diffuse groups are pruned first, so importance = -entropy;
- random: a seeded uniform draw (the control).
"""

from __future__ import annotations

from typing import Any

from foundry.executors.base import StageReporter
from foundry.executors.errors import ExecutorError

KINDS = {
    "gradient": "taylor |w*grad|",
    "activation-magnitude": "mean |attention output|",
    "entropy": "mean attention entropy (nats)",
    "random": "uniform random",
}


def _layout(model: Any) -> tuple[list[Any], int, int, int]:
    config = model.config
    heads, kv = int(config.num_attention_heads), int(config.num_key_value_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    attns = [layer.self_attn for layer in model.model.layers]
    return attns, heads, kv, head_dim


def _taylor(attn: Any, kv: int, per_group: int, head_dim: int) -> list[float]:
    def part(linear: Any, width: int, dim: int) -> Any:
        w, g = linear.weight, linear.weight.grad
        if g is None:
            raise ExecutorError("no gradient reached the attention weights")
        t = (w * g).abs()
        t = t if dim == 0 else t.t()
        return t.reshape(kv, width, -1).sum(dim=(1, 2))

    q = part(attn.q_proj, per_group * head_dim, 0)
    k = part(attn.k_proj, head_dim, 0)
    v = part(attn.v_proj, head_dim, 0)
    o = part(attn.o_proj, per_group * head_dim, 1)
    return [float(x) for x in (q + k + v + o).detach().cpu()]


def group_scores(
    model: Any,
    strategy: str,
    windows: Any,
    *,
    batch_size: int,
    seed: int,
    device: str,
    reporter: StageReporter,
) -> tuple[list[list[float]], list[list[float]], str]:
    import torch

    attns, heads, kv, head_dim = _layout(model)
    per_group = heads // kv
    layers = len(attns)
    if strategy == "random":
        generator = torch.Generator().manual_seed(seed)
        raw = torch.rand(layers, kv, generator=generator).tolist()
        return raw, raw, KINDS[strategy]
    if strategy not in KINDS:
        raise ExecutorError(f"no importance score for strategy {strategy!r}")

    totals = torch.zeros(layers, kv, dtype=torch.float64)
    batches = [windows[i : i + batch_size] for i in range(0, int(windows.shape[0]), batch_size)]
    captured: list[Any] = [None] * layers
    hooks = []
    if strategy == "activation-magnitude":
        for i, attn in enumerate(attns):
            def hook(_module: Any, args: tuple[Any, ...], i: int = i) -> None:
                captured[i] = args[0].detach()

            hooks.append(attn.o_proj.register_forward_pre_hook(hook))
    try:
        for b, batch in enumerate(batches, start=1):
            batch = batch.to(device)
            if strategy == "gradient":
                model.zero_grad(set_to_none=True)
                model(input_ids=batch, labels=batch).loss.backward()
                for i, attn in enumerate(attns):
                    totals[i] += torch.tensor(_taylor(attn, kv, per_group, head_dim))
            elif strategy == "activation-magnitude":
                with torch.no_grad():
                    model(input_ids=batch)
                for i, out in enumerate(captured):
                    per_head = (
                        out.abs().reshape(*out.shape[:-1], heads, head_dim).mean(dim=(0, 1, 3))
                    )
                    totals[i] += per_head.reshape(kv, per_group).mean(dim=1).double().cpu()
            else:  # entropy
                with torch.no_grad():
                    attentions = model(input_ids=batch, output_attentions=True).attentions
                if not attentions or attentions[0] is None:
                    raise ExecutorError("the model returned no attention weights (not eager?)")
                for i, probs in enumerate(attentions):
                    probs = probs.double()
                    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # [B, H, T]
                    per_head = entropy.mean(dim=(0, 2))
                    totals[i] += per_head.reshape(kv, per_group).mean(dim=1).cpu()
            reporter.progress(0.1 + 0.7 * b / len(batches), f"{strategy} scores batch {b}")
    finally:
        for handle in hooks:
            handle.remove()
        model.zero_grad(set_to_none=True)
    raw_t = totals / max(1, len(batches))
    raw = raw_t.tolist()
    importance = (-raw_t).tolist() if strategy == "entropy" else raw
    return importance, raw, KINDS[strategy]
