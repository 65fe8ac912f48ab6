"""Importance of every prunable unit of a model, for structured pruning on any known family.

Units, found through the family's `Architecture` (never by family name):
- attention layers: query heads, grouped by the KV head they share;
- linear-attention (Gated DeltaNet) layers: value heads, grouped by the key head they share;
- MLP channels (only when asked): a dense MLP's intermediate channels, or each expert's.

`unit_scores` returns one `GroupedScores` per token-mixer layer and, when asked, one
`ChannelScores` per MLP, plus what the numbers measure and notes on any fallback:

- gradient: first-order Taylor |w * dL/dw| over every weight a unit owns (a head's q rows, its
  gate rows, its o_proj columns; a KV group's k/v rows; a value head's v, z, a, b rows, conv
  channels, decay parameters and out_proj columns; a channel's gate/up rows and down column);
- activation-magnitude: mean |input of the output projection| per unit (o_proj, out_proj,
  down_proj); fused experts expose no per-channel activation, so expert channels use |w|;
- entropy: mean entropy of each softmax head's attention distribution (eager attention);
  the most diffuse heads go first, so importance = -entropy. Linear attention has no
  attention distribution and MLPs none at all: those units fall back to activation magnitude;
- random: a seeded uniform draw (the control).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from foundry.executors.architectures import Architecture, LayerKind
from foundry.executors.base import StageReporter
from foundry.executors.errors import ExecutorError

KINDS = {
    "gradient": "taylor |w*grad|",
    "activation-magnitude": "mean |output-projection input|",
    "entropy": "mean attention entropy (nats)",
    "random": "uniform random",
}


@dataclass
class GroupedScores:
    """One token-mixer layer: `units[g][u]` is unit u of group g (head of a KV group, value
    head of a key head); `extra[g]` is what the group owns beyond its units (k/v rows)."""

    layer: int
    kind: LayerKind
    units: Any  # torch tensor [groups, per_group], higher = keep
    raw: Any  # the measured values, same shape (entropy in nats, not negated)
    extra: Any  # torch tensor [groups]

    def group_importance(self) -> list[float]:
        return [float(x) for x in (self.units.sum(dim=1) + self.extra)]

    def raw_by_group(self, strategy: str) -> list[float]:
        """A group's reported score: the sum for Taylor (it adds up), else the mean."""
        if strategy == "gradient":
            return [float(x) for x in (self.raw.sum(dim=1) + self.extra)]
        return [float(x) for x in self.raw.mean(dim=1)]


@dataclass
class ChannelScores:
    """One MLP: `scores[e][c]` for channel c of expert e (a dense MLP is one expert)."""

    layer: int
    sparse: bool
    scores: Any  # torch tensor [experts, channels], higher = keep


@dataclass
class Geometry:
    """Where a layer's units sit, read from the model and its Architecture."""

    layer: int
    kind: LayerKind
    mixer: Any
    groups: int
    per_group: int
    head_dim: int
    mlp: Any
    sparse: bool
    extra_info: dict[str, int] = field(default_factory=dict)


def geometry(model: Any, arch: Architecture) -> list[Geometry]:
    """Every decoder layer's mixer and MLP with its unit counts; a layout mismatch raises."""
    config = model.config
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ExecutorError(f"structured pruning needs model.model.layers; {type(model).__name__}")
    out: list[Geometry] = []
    for i, (layer, kind) in enumerate(zip(layers, arch.layer_kinds_of(config), strict=True)):
        mixer = getattr(layer, arch.kind_module(kind), None)
        if mixer is None:
            raise ExecutorError(
                f"{arch.family} layer {i} ({kind}) has no {arch.kind_module(kind)}: the model "
                "does not match its architecture map"
            )
        if kind == "attention":
            heads, kv = int(config.num_attention_heads), int(config.num_key_value_heads)
            head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
            groups, per_group, extra = kv, heads // kv, {}
        else:
            nk, nv = int(config.linear_num_key_heads), int(config.linear_num_value_heads)
            groups, per_group, head_dim = nk, nv // nk, int(config.linear_value_head_dim)
            extra = {"key_head_dim": int(config.linear_key_head_dim)}
        mlp_name = arch.moe.module if arch.moe else (arch.mlp.module if arch.mlp else "mlp")
        out.append(Geometry(i, kind, mixer, groups, per_group, head_dim,
                            getattr(layer, mlp_name, None), arch.is_sparse(layer), extra))
    return out


def _blocks(t: Any, count: int, dim: int) -> Any:
    """|t| summed within `count` equal blocks along `dim` -> [count]."""
    t = t.abs()
    t = t.movedim(dim, 0)
    return t.reshape(count, -1).sum(dim=1)


def _taylor_attention(g: Geometry, arch: Architecture) -> tuple[Any, Any]:
    a = arch.attention
    heads = g.groups * g.per_group

    def wg(module: Any) -> tuple[Any, Any]:
        if module.weight.grad is None:
            raise ExecutorError("no gradient reached the attention weights")
        return module.weight, module.weight.grad

    q, o = getattr(g.mixer, a.q_proj), getattr(g.mixer, a.o_proj)
    w, grad = wg(q)
    units = _blocks(w * grad, heads, 0)
    if q.bias is not None and q.bias.grad is not None:
        units = units + _blocks(q.bias * q.bias.grad, heads, 0)
    w, grad = wg(o)
    units = units + _blocks(w * grad, heads, 1)
    extra = 0
    for name in (a.k_proj, a.v_proj):
        proj = getattr(g.mixer, name)
        w, grad = wg(proj)
        extra = extra + _blocks(w * grad, g.groups, 0)
        if proj.bias is not None and proj.bias.grad is not None:
            extra = extra + _blocks(proj.bias * proj.bias.grad, g.groups, 0)
    return units.reshape(g.groups, g.per_group), extra


def _taylor_linear(g: Geometry, arch: Architecture) -> tuple[Any, Any]:
    la = arch.linear_attention
    assert la is not None
    nk, nv = g.groups, g.groups * g.per_group
    key_dim = nk * g.extra_info["key_head_dim"]

    def wg(param: Any) -> Any:
        if param.grad is None:
            raise ExecutorError("no gradient reached the linear-attention weights")
        return param * param.grad

    qkv = wg(getattr(g.mixer, la.in_proj_qkv).weight)
    conv = wg(getattr(g.mixer, la.conv1d).weight)
    units = _blocks(qkv[2 * key_dim:], nv, 0) + _blocks(conv[2 * key_dim:], nv, 0)
    for name in (la.in_proj_z, la.in_proj_a, la.in_proj_b):
        units = units + _blocks(wg(getattr(g.mixer, name).weight), nv, 0)
    for name in la.per_value_head:
        units = units + _blocks(wg(getattr(g.mixer, name)), nv, 0)
    units = units + _blocks(wg(getattr(g.mixer, la.out_proj).weight), nv, 1)
    extra = (_blocks(qkv[:key_dim], nk, 0) + _blocks(qkv[key_dim: 2 * key_dim], nk, 0)
             + _blocks(conv[:key_dim], nk, 0) + _blocks(conv[key_dim: 2 * key_dim], nk, 0))
    return units.reshape(nk, g.per_group), extra


def _mlp_weights(g: Geometry, arch: Architecture, taylor: bool) -> Any:
    """[experts, channels] of |w| (or |w * grad|) over each channel's gate/up rows and down
    column."""
    import torch

    def val(param: Any) -> Any:
        if not taylor:
            return param.abs()
        if param.grad is None:
            raise ExecutorError("no gradient reached the MLP weights")
        return (param * param.grad).abs()

    if g.sparse:
        moe = arch.moe
        assert moe is not None
        experts = getattr(g.mlp, moe.experts)
        gate_up = val(getattr(experts, moe.gate_up_proj))
        down = val(getattr(experts, moe.down_proj))
        width = down.shape[-1]
        return gate_up[:, :width].sum(-1) + gate_up[:, width:].sum(-1) + down.sum(1)
    mlp = arch.mlp
    assert mlp is not None
    gate = val(getattr(g.mlp, mlp.gate_proj).weight)
    up = val(getattr(g.mlp, mlp.up_proj).weight)
    down = val(getattr(g.mlp, mlp.down_proj).weight)
    return torch.stack([gate.sum(1) + up.sum(1) + down.sum(0)])


def _output_projection(g: Geometry, arch: Architecture) -> Any:
    if g.kind == "attention":
        return getattr(g.mixer, arch.attention.o_proj)
    assert arch.linear_attention is not None
    return getattr(g.mixer, arch.linear_attention.out_proj)


def _random_scores(geo: list[Geometry], arch: Architecture, seed: int, channels: bool
                   ) -> tuple[list[GroupedScores], list[ChannelScores]]:
    """The `random` strategy: a seeded draw per unit (and per MLP channel)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    mixers = []
    for g in geo:
        raw = torch.rand(g.groups, g.per_group, generator=generator, dtype=torch.float64)
        mixers.append(GroupedScores(g.layer, g.kind, raw, raw,
                                    torch.zeros(g.groups, dtype=torch.float64)))
    mlps = []
    if channels:
        for g in geo:
            shape = _mlp_weights(g, arch, taylor=False).shape
            mlps.append(ChannelScores(g.layer, g.sparse, torch.rand(
                *shape, generator=generator, dtype=torch.float64)))
    return mixers, mlps


def _strategy_notes(strategy: str, geo: list[Geometry], channels: bool) -> list[str]:
    """What a reader of the scores must know about how this strategy measured them here."""
    notes: list[str] = []
    if strategy == "entropy" and any(g.kind == "linear_attention" for g in geo):
        notes.append("entropy is defined for softmax attention: linear-attention value heads "
                     "were scored by mean |out_proj input| instead")
    if strategy != "gradient" and channels:
        notes.append("MLP channels were scored by mean |down_proj input|"
                     + ("; fused experts expose no per-channel activation, so expert channels "
                        "were scored by weight magnitude" if any(g.sparse for g in geo) else ""))
    return notes


@dataclass
class _Totals:
    """Per-layer sums of unit, extra and channel scores over the batches seen."""

    units: list[Any]
    extra: list[Any]
    channels: list[Any]

    @classmethod
    def zeros(cls, geo: list[Geometry]) -> _Totals:
        import torch

        return cls([torch.zeros(g.groups, g.per_group, dtype=torch.float64) for g in geo],
                   [torch.zeros(g.groups, dtype=torch.float64) for g in geo], [None] * len(geo))

    def add_channels(self, i: int, c: Any) -> None:
        self.channels[i] = c if self.channels[i] is None else self.channels[i] + c


def _hooks(geo: list[Geometry], arch: Architecture, strategy: str, channels: bool,
           captured: dict[tuple[str, int], Any]) -> list[Any]:
    """Forward hooks that put each layer's measured tensor into `captured`: the output
    projection's input (activation magnitude), the attention weights (entropy), the MLP
    down projection's input (channels). Gradient scoring needs none."""
    def pre_hook(key: tuple[str, int]) -> Any:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            captured[key] = args[0].detach()
        return hook

    def post_hook(key: tuple[str, int]) -> Any:
        def hook(_module: Any, _args: tuple[Any, ...], output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            captured[key] = None if weights is None else weights.detach()
        return hook

    hooks = []
    for g in geo:
        if strategy == "activation-magnitude" or (
                strategy == "entropy" and g.kind == "linear_attention"):
            hooks.append(_output_projection(g, arch).register_forward_pre_hook(
                pre_hook(("mixer", g.layer))))
        elif strategy == "entropy":
            hooks.append(g.mixer.register_forward_hook(post_hook(("mixer", g.layer))))
        if channels and strategy != "gradient" and not g.sparse:
            assert arch.mlp is not None
            down = getattr(g.mlp, arch.mlp.down_proj)
            hooks.append(down.register_forward_pre_hook(pre_hook(("mlp", g.layer))))
    return hooks


def _add_gradient_batch(model: Any, batch: Any, geo: list[Geometry], arch: Architecture,
                        totals: _Totals, channels: bool) -> None:
    """One batch's first-order Taylor scores (|weight x gradient| per unit) added up."""
    import torch

    model.zero_grad(set_to_none=True)
    model(input_ids=batch, labels=batch).loss.backward()
    with torch.no_grad():
        for i, g in enumerate(geo):
            taylor = _taylor_attention if g.kind == "attention" else _taylor_linear
            units, extra = taylor(g, arch)
            totals.units[i] += units.double().cpu()
            totals.extra[i] += extra.double().cpu()
            if channels:
                totals.add_channels(i, _mlp_weights(g, arch, taylor=True).double().cpu())


def _add_measured_batch(model: Any, batch: Any, geo: list[Geometry], arch: Architecture,
                        strategy: str, totals: _Totals, channels: bool,
                        captured: dict[tuple[str, int], Any]) -> None:
    """One batch's hooked measurements (entropy or mean |activation| per unit) added up."""
    import torch

    captured.clear()
    with torch.no_grad():
        model(input_ids=batch)
    for i, g in enumerate(geo):
        out = captured.get(("mixer", g.layer))
        if out is None:
            raise ExecutorError(
                f"layer {g.layer} ({g.kind}) gave no {strategy} measurement"
                + (" (attention weights need eager attention)" if strategy == "entropy"
                   else ""))
        units_n = g.groups * g.per_group
        if out.dim() == 4 and g.kind == "attention" and strategy == "entropy":
            probs = out.double()
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # [B, H, T]
            per_unit = entropy.mean(dim=(0, 2))
        else:
            per_unit = out.abs().reshape(*out.shape[:-1], units_n, -1).mean(
                dim=(0, 1, 3)).double()
        totals.units[i] += per_unit.reshape(g.groups, g.per_group).cpu()
        if channels:
            if g.sparse:
                c = _mlp_weights(g, arch, taylor=False).double().cpu()
            else:
                act = captured[("mlp", g.layer)]
                c = act.abs().mean(dim=(0, 1)).double().cpu().unsqueeze(0)
            totals.add_channels(i, c)


def unit_scores(
    model: Any,
    arch: Architecture,
    strategy: str,
    windows: Any,
    *,
    batch_size: int,
    seed: int,
    device: str,
    reporter: StageReporter,
    channels: bool = False,
) -> tuple[list[GroupedScores], list[ChannelScores], str, list[str]]:
    """Importance of every unit (see the module docstring): (mixers, mlps, kind, notes)."""
    if strategy not in KINDS:
        raise ExecutorError(f"no importance score for strategy {strategy!r}")
    geo = geometry(model, arch)
    if strategy == "random":
        return (*_random_scores(geo, arch, seed, channels), KINDS[strategy], [])
    notes = _strategy_notes(strategy, geo, channels)
    totals = _Totals.zeros(geo)
    captured: dict[tuple[str, int], Any] = {}
    hooks = _hooks(geo, arch, strategy, channels, captured)
    batches = [windows[i: i + batch_size] for i in range(0, int(windows.shape[0]), batch_size)]
    try:
        for b, batch in enumerate(batches, start=1):
            batch = batch.to(device)
            if strategy == "gradient":
                _add_gradient_batch(model, batch, geo, arch, totals, channels)
            else:
                _add_measured_batch(model, batch, geo, arch, strategy, totals, channels,
                                    captured)
            reporter.progress(0.1 + 0.7 * b / len(batches), f"{strategy} scores batch {b}")
    finally:
        for handle in hooks:
            handle.remove()
        model.zero_grad(set_to_none=True)
    count = max(1, len(batches))
    mixers = []
    for i, g in enumerate(geo):
        raw = totals.units[i] / count
        entropic = strategy == "entropy" and g.kind == "attention"
        mixers.append(GroupedScores(g.layer, g.kind, -raw if entropic else raw, raw,
                                    totals.extra[i] / count))
    mlps = [ChannelScores(g.layer, g.sparse, totals.channels[i] / count)
            for i, g in enumerate(geo)] if channels else []
    return mixers, mlps, KINDS[strategy], notes
