"""`prune`: unstructured magnitude pruning, or structured removal of whole heads and channels.

- `magnitude`: global L1 pruning (`torch.nn.utils.prune.global_unstructured`) of every Linear
  weight except `lm_head`, and of fused expert tensors, at `level`, a short recovery
  fine-tune with the masks attached (so the zeros stay zero), then `prune.remove`. The zeros
  are stored dense.
- `gradient`, `activation-magnitude`, `entropy`, `random`: structured removal, on any family
  `foundry.executors.architectures` describes, of
  - whole query heads of softmax-attention layers, respecting GQA: whole KV groups (a KV
    head and the query heads sharing it) and/or the same number of query heads in every
    group; a gated query (Qwen3.5) loses its gate rows with it, q/k norms are per head_dim
    and stay;
  - whole value heads of linear-attention (Gated DeltaNet) layers, the same way: whole key
    heads with their value heads and/or value heads within every key head, with their z,
    a, b rows, conv channels, decay parameters and out_proj columns;
  - with the stage's extra field `mlpLevel` (default 0), that fraction of MLP channels
    (of every expert, for a sparse MLP).
  The config holds one count per kind for the whole model, so every layer of a kind keeps
  the same counts; which heads stay is chosen per layer. `level` is the fraction of heads
  to remove; the shape removing the most without exceeding it, within `minHeadsPerLayer`
  and `minKvHeadsPerLayer` (key heads, for linear attention), wins, fewer groups first
  (they also shrink the KV cache). The kept slices of every tensor make a new state dict,
  loaded strictly into a model built from the new config: a slice the map gets wrong fails
  there. The parameter count predicted from the slices is checked against the built model
  and against the saved model reloaded. Importance: `foundry.executors.real.prune_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from foundry.domain.values.stages import PruneStage
from foundry.executors.architectures import Architecture, for_config
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.common import (
    load_model,
    max_positions,
    param_count,
    parse_stage,
    save_model,
    set_seed,
    stage_seed,
)
from foundry.executors.real.data import corpus_for, token_windows
from foundry.executors.real.prune_scores import (
    ChannelScores,
    GroupedScores,
    geometry,
    unit_scores,
)
from foundry.executors.real.train import LoopConfig, run_training

STRUCTURED = ("gradient", "activation-magnitude", "entropy", "random")
SUPPORTED = ("magnitude", *STRUCTURED)
RECOVERY_STEP_CAP = 10
RECOVERY_LEARNING_RATE = 5e-5
ANALYSIS_BATCH_CAP = 8
BATCH_SIZE = 4
ANALYSIS_BATCH_SIZE = 2
SEQ_LEN = 128


def _prunable_weights(model: Any) -> list[tuple[Any, str]]:
    """(module, parameter name) of every Linear weight but lm_head's, and of the fused expert
    tensors of a sparse MLP (no Linear modules, but most of a MoE model's weights)."""
    import torch

    found: list[tuple[Any, str]] = [
        (module, "weight")
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "lm_head"
    ]
    arch = for_config(model.config)
    moe = arch.moe
    if moe is not None:
        for layer in model.model.layers:
            if arch.is_sparse(layer):
                experts = getattr(getattr(layer, moe.module), moe.experts)
                found += [(experts, moe.gate_up_proj), (experts, moe.down_proj)]
    return found


def _recover(model: Any, tokenizer: Any, corpus: Any, ctx: StageContext,
             reporter: StageReporter, *, steps: int, seed: int, asked: int) -> tuple[float, str]:
    """A short fine-tune with the pruning masks attached (the pruned weights stay zero);
    returns its final loss and the note that says how it ran."""
    seq_len = min(SEQ_LEN, max_positions(model))
    windows = token_windows(
        tokenizer, corpus, split="calibration", seq_len=seq_len,
        max_windows=steps * BATCH_SIZE, seed=seed,
    )
    cfg = LoopConfig(
        steps=steps, batch_size=BATCH_SIZE, learning_rate=RECOVERY_LEARNING_RATE,
        device=ctx.device, progress=(0.2, 0.9), label="recovery",
    )
    curve = run_training(model, windows, cfg, reporter)
    capped = f" (analysisSteps {asked} capped at {RECOVERY_STEP_CAP})" if steps < asked else ""
    return curve[-1]["loss"], (
        f"recovery fine-tune with masks attached: {steps} steps{capped}, batch "
        f"{BATCH_SIZE}x{seq_len}, lr {RECOVERY_LEARNING_RATE:g}"
    )


def _magnitude(
    ctx: StageContext, stage: PruneStage, reporter: StageReporter, seed: int
) -> StageResult:
    import torch
    from torch.nn.utils import prune as torch_prune

    prune: Any = torch_prune  # partly untyped

    corpus = corpus_for(ctx)
    model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
    params = _prunable_weights(model)
    if not params:
        raise ExecutorError("magnitude pruning found no Linear layers to prune")
    notes: list[str] = []
    steps = min(stage.analysis_steps, RECOVERY_STEP_CAP)
    if stage.level > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=stage.level)
    reporter.progress(0.2, f"pruned {stage.level:.0%} of {len(params)} weight tensors by |w|")
    final_loss = None
    if stage.level > 0 and steps > 0:
        final_loss, note = _recover(model, tokenizer, corpus, ctx, reporter, steps=steps,
                                    seed=seed, asked=stage.analysis_steps)
        notes.append(note)
    if stage.level > 0:
        for module, name in params:
            prune.remove(module, name)
    else:
        notes.append("level 0: nothing pruned")
    with torch.no_grad():
        zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
        total = sum(getattr(m, n).numel() for m, n in params)
    save_model(model, tokenizer, ctx.output_dir)
    reporter.progress(1.0, "saved")
    metrics: dict[str, Any] = {
        "strategy": "magnitude",
        "level": stage.level,
        "sparsity": round(zeros / total, 6),
        "prunedWeights": zeros,
        "prunableWeights": total,
        "params": param_count(model),
        "recoverySteps": steps if stage.level > 0 else 0,
    }
    if final_loss is not None:
        metrics["recoveryFinalLoss"] = final_loss
    return StageResult(output_dir=ctx.output_dir, metrics=metrics, notes=tuple(notes))


@dataclass(frozen=True)
class Shape:
    """How many groups (KV heads, key heads) and units per group a layer kind keeps."""

    groups: int
    per_group: int

    @property
    def units(self) -> int:
        return self.groups * self.per_group


@dataclass
class Plan:
    """What stays: per layer, the kept groups and units (original indices, in order)."""

    shapes: dict[str, Shape]  # layer kind -> kept shape
    groups: dict[int, list[int]] = field(default_factory=dict)
    units: dict[int, list[int]] = field(default_factory=dict)  # flattened unit indices
    channels: dict[int, list[list[int]]] = field(default_factory=dict)  # per expert


def choose_shape(
    kind: str, groups: int, per_group: int, level: float, min_units: int, min_groups: int,
    notes: list[str], valid: Any = None,
) -> Shape:
    """The kept (groups, per_group) removing the most units up to round(level * units).

    Ties keep fewer groups. `valid(shape)` may reject shapes the config class refuses.
    """
    total = groups * per_group
    wanted = round(level * total)
    best = Shape(groups, per_group)
    rejected: list[Shape] = []
    for g in range(groups, 0, -1):
        for u in range(per_group, 0, -1):
            removed = total - g * u
            if removed > wanted or g * u < min_units or g < max(1, min_groups):
                continue
            if valid is not None and removed and not valid(Shape(g, u)):
                rejected.append(Shape(g, u))
                continue
            current = total - best.units
            if removed > current or (removed == current and g < best.groups):
                best = Shape(g, u)
    better = sorted({s.units for s in rejected if s.units < best.units})
    if better:
        notes.append(
            f"{kind}: the model's config class rejects {', '.join(map(str, better))} heads "
            f"(e.g. hidden_size must be a multiple of the head count)"
        )
    unit, group = ("heads", "KV groups") if kind == "attention" else (
        "value heads", "key heads")
    if total - best.units < wanted:
        notes.append(
            f"{kind}: level {level} asks to remove {wanted} of {total} {unit} per layer; "
            f"removed {total - best.units} ({groups - best.groups} of {groups} {group}, "
            f"{per_group - best.per_group} of {per_group} {unit} per group) to keep "
            f"minHeadsPerLayer {min_units} and minKvHeadsPerLayer {min_groups}"
        )
    return best


def _valid_heads(config: Any, shape: Shape) -> bool:
    """Whether the config class accepts these head counts (Llama wants hidden % heads == 0)."""
    values = config.to_dict()
    values.update(num_attention_heads=shape.units, num_key_value_heads=shape.groups,
                  head_dim=_head_dim(config))
    try:
        type(config).from_dict(values)
    except Exception:  # the strict config validators raise several types
        return False
    return True


def _head_dim(config: Any) -> int:
    heads = config.num_attention_heads
    return int(getattr(config, "head_dim", None) or config.hidden_size // heads)


def _most_important(row: list[float], count: int) -> list[int]:
    """The `count` indices of highest importance (ties: the lower index), in index order."""
    ranked = sorted(range(len(row)), key=lambda g: (-row[g], g))
    return sorted(ranked[:count])


def make_plan(
    mixers: list[GroupedScores], channels: list[ChannelScores], shapes: dict[str, Shape],
    channel_keep: int | None,
) -> Plan:
    """Per layer: the best groups, then the best units inside each kept group."""
    plan = Plan(shapes=shapes)
    for scores in mixers:
        shape = shapes[scores.kind]
        per_group = int(scores.units.shape[1])
        kept_groups = _most_important(scores.group_importance(), shape.groups)
        units: list[int] = []
        for g in kept_groups:
            row = [float(x) for x in scores.units[g]]
            units += [g * per_group + u for u in _most_important(row, shape.per_group)]
        plan.groups[scores.layer], plan.units[scores.layer] = kept_groups, units
    if channel_keep is not None:
        for c in channels:
            plan.channels[c.layer] = [
                _most_important([float(x) for x in row], channel_keep) for row in c.scores
            ]
    return plan


def _rows(indices: list[int], block: int) -> list[int]:
    return [i * block + r for i in indices for r in range(block)]


class _Cutter:
    """A state dict being cut: the kept slices replace the tensors, `removed` counts what
    went."""

    def __init__(self, state: dict[str, Any], family: str) -> None:
        self.out, self.removed, self.family = dict(state), 0, family

    def take(self, key: str, index: list[int], dim: int) -> None:
        import torch

        if key not in self.out:
            raise ExecutorError(f"{self.family}: the model has no tensor {key}; its map is wrong")
        tensor = self.out[key]
        kept = tensor.index_select(dim, torch.tensor(index, dtype=torch.long))
        self.removed += tensor.numel() - kept.numel()
        self.out[key] = kept.contiguous()

    def take_if(self, key: str, index: list[int], dim: int) -> None:
        if key in self.out:
            self.take(key, index, dim)


def _cut_attention(c: _Cutter, arch: Architecture, config: Any, prefix: str,
                   units: list[int], groups: list[int]) -> None:
    """Softmax attention: the kept query heads (and their gates), KV groups, output columns."""
    a = arch.attention
    hd = _head_dim(config)
    base = f"{prefix}{a.module}."
    q_rows = _rows(units, hd * (2 if a.gated_query else 1))
    c.take(f"{base}{a.q_proj}.weight", q_rows, 0)
    c.take_if(f"{base}{a.q_proj}.bias", q_rows, 0)
    for name in (a.k_proj, a.v_proj):
        c.take(f"{base}{name}.weight", _rows(groups, hd), 0)
        c.take_if(f"{base}{name}.bias", _rows(groups, hd), 0)
    c.take(f"{base}{a.o_proj}.weight", _rows(units, hd), 1)


def _cut_linear_attention(c: _Cutter, arch: Architecture, config: Any, prefix: str,
                          units: list[int], groups: list[int]) -> None:
    """Linear attention: the kept key heads' q/k rows, the kept value heads' v rows (in the
    fused projection and its convolution), their z/a/b rows, per-head tensors and outputs."""
    la = arch.linear_attention
    assert la is not None
    base = f"{prefix}{la.module}."
    dk, dv = int(config.linear_key_head_dim), int(config.linear_value_head_dim)
    key_dim = int(config.linear_num_key_heads) * dk
    qk = _rows(groups, dk)
    qkv_rows = qk + [key_dim + r for r in qk] + [2 * key_dim + r for r in _rows(units, dv)]
    c.take(f"{base}{la.in_proj_qkv}.weight", qkv_rows, 0)
    c.take(f"{base}{la.conv1d}.weight", qkv_rows, 0)
    c.take_if(f"{base}{la.conv1d}.bias", qkv_rows, 0)
    c.take(f"{base}{la.in_proj_z}.weight", _rows(units, dv), 0)
    c.take(f"{base}{la.in_proj_a}.weight", units, 0)
    c.take(f"{base}{la.in_proj_b}.weight", units, 0)
    for name in la.per_value_head:
        c.take(f"{base}{name}", units, 0)
    c.take(f"{base}{la.out_proj}.weight", _rows(units, dv), 1)


def _cut_channels(c: _Cutter, arch: Architecture, prefix: str,
                  per_expert: list[list[int]]) -> None:
    """The kept MLP channels: per expert in fused expert tensors, else the dense MLP's."""
    import torch

    moe = arch.moe
    sparse_key = f"{prefix}{moe.module}.{moe.experts}.{moe.gate_up_proj}" if moe else ""
    if moe is not None and sparse_key in c.out:
        gate_up = c.out[sparse_key]
        width = int(gate_up.shape[1]) // 2
        down_key = f"{prefix}{moe.module}.{moe.experts}.{moe.down_proj}"
        ups, downs = [], []
        for e, keep in enumerate(per_expert):
            ups.append(gate_up[e][keep + [width + ch for ch in keep]])
            downs.append(c.out[down_key][e][:, keep])
        new_up, new_down = torch.stack(ups), torch.stack(downs)
        c.removed += gate_up.numel() - new_up.numel()
        c.removed += c.out[down_key].numel() - new_down.numel()
        c.out[sparse_key], c.out[down_key] = new_up, new_down
        return
    mlp = arch.mlp
    assert mlp is not None
    base = f"{prefix}{mlp.module}."
    keep = per_expert[0]
    c.take(f"{base}{mlp.gate_proj}.weight", keep, 0)
    c.take(f"{base}{mlp.up_proj}.weight", keep, 0)
    c.take(f"{base}{mlp.down_proj}.weight", keep, 1)


def cut_state(
    state: dict[str, Any], arch: Architecture, config: Any, plan: Plan
) -> tuple[dict[str, Any], int]:
    """The state dict with only the kept slices, and how many parameters were cut away."""
    cutter = _Cutter(state, arch.family)
    kinds = arch.layer_kinds_of(config)
    for layer, units in plan.units.items():
        prefix = f"model.layers.{layer}."
        cut = _cut_attention if kinds[layer] == "attention" else _cut_linear_attention
        cut(cutter, arch, config, prefix, units, plan.groups[layer])
    for layer, per_expert in plan.channels.items():
        _cut_channels(cutter, arch, f"model.layers.{layer}.", per_expert)
    return cutter.out, cutter.removed


def new_config(arch: Architecture, config: Any, plan: Plan) -> Any:
    """A copy of `config` with the kept counts."""
    import copy

    out = copy.deepcopy(config)
    shape = plan.shapes.get("attention")
    if shape is not None:
        out.head_dim = _head_dim(config)
        out.num_attention_heads, out.num_key_value_heads = shape.units, shape.groups
    shape = plan.shapes.get("linear_attention")
    if shape is not None:
        out.linear_num_key_heads, out.linear_num_value_heads = shape.groups, shape.units
    if plan.channels:
        widths = {len(k[0]) for k in plan.channels.values()}
        (width,) = widths
        if arch.moe is not None:
            setattr(out, arch.moe.intermediate_key, width)
        else:
            assert arch.mlp is not None
            setattr(out, arch.mlp.intermediate_key, width)
    return out


def apply_plan(model: Any, arch: Architecture, plan: Plan) -> tuple[Any, int]:
    """A new model holding only the kept slices of `model`, and the parameters cut away.

    The model is built from the new config and the state dict loaded strictly: a slice of
    the wrong size (a wrong map) fails here, by tensor name.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = new_config(arch, model.config, plan)
    state, removed = cut_state(model.state_dict(), arch, model.config, plan)
    auto: Any = AutoModelForCausalLM  # untyped in transformers
    with torch.random.fork_rng(devices=[]):
        pruned = auto.from_config(config, dtype=torch.float32)
    try:
        pruned.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExecutorError(f"{arch.family}: the pruned tensors do not fit the pruned config: "
                            f"{e}") from e
    pruned.to(next(model.parameters()).device)
    pruned.eval()
    return pruned, removed


def _cut(model: Any, keep: list[list[int]]) -> Any:
    """The model with only the KV groups `keep[layer]` (and all their heads) of every
    attention layer: the in-memory twin of what a group-only prune saves."""
    arch = for_config(model.config)
    geo = [g for g in geometry(model, arch) if g.kind == "attention"]
    per_group = geo[0].per_group
    plan = Plan(shapes={"attention": Shape(len(keep[0]), per_group)})
    for g, groups in zip(geo, keep, strict=True):
        plan.groups[g.layer] = list(groups)
        plan.units[g.layer] = [k * per_group + u for k in groups for u in range(per_group)]
    return apply_plan(model, arch, plan)[0]


def _shapes(config: Any, geo: list[Any], stage: PruneStage, notes: list[str]
            ) -> dict[str, Shape]:
    """The kept shape of each mixer kind (groups and units per layer), within the minimums."""
    shapes: dict[str, Shape] = {}
    for kind in dict.fromkeys(g.kind for g in geo):
        first = next(g for g in geo if g.kind == kind)
        valid = (lambda s: _valid_heads(config, s)) if kind == "attention" else None
        shapes[kind] = choose_shape(
            kind, first.groups, first.per_group, float(stage.level),
            stage.min_heads_per_layer, stage.min_kv_heads_per_layer, notes, valid,
        )
    return shapes


def _channel_keep(config: Any, arch: Any, mlp_level: float, notes: list[str]) -> int | None:
    """How many MLP (or expert) channels are kept at `mlpLevel`; None when it is 0."""
    if mlp_level <= 0:
        return None
    width_key = arch.moe.intermediate_key if arch.moe else (
        arch.mlp.intermediate_key if arch.mlp else "intermediate_size")
    width = int(getattr(config, width_key))
    if arch.moe is not None and arch.moe.shared_expert:
        notes.append("the shared expert's channels are not pruned")
    return max(1, width - round(mlp_level * width))


def _analysis_windows(ctx: StageContext, stage: PruneStage, model: Any, tokenizer: Any,
                      seed: int, notes: list[str]) -> tuple[int, Any]:
    """(batches, token windows) of the calibration corpus the scores are measured on; the
    random strategy measures nothing, but the corpus the recipe pins is still checked."""
    if stage.strategy == "random":
        corpus_for(ctx)
        return 0, None
    batches = min(stage.analysis_steps, ANALYSIS_BATCH_CAP)
    seq_len = min(SEQ_LEN, max_positions(model))
    windows = token_windows(
        tokenizer, corpus_for(ctx), split="calibration", seq_len=seq_len,
        max_windows=max(1, batches) * ANALYSIS_BATCH_SIZE, seed=seed,
    )
    capped = (f" (analysisSteps {stage.analysis_steps} capped at {ANALYSIS_BATCH_CAP})"
              if batches < stage.analysis_steps else "")
    notes.append(f"importance from {batches} calibration batches of {ANALYSIS_BATCH_SIZE}x"
                 f"{seq_len} tokens{capped}")
    return batches, windows


def _structured(
    ctx: StageContext, stage: PruneStage, reporter: StageReporter, seed: int
) -> StageResult:
    eager = "eager" if stage.strategy == "entropy" else None
    model, tokenizer = load_model(ctx.input_dir, device=ctx.device, attn_implementation=eager)
    arch = for_config(model.config)
    geo = geometry(model, arch)
    params_before = param_count(model)
    notes: list[str] = []
    mlp_level = float(ctx.stage.get("mlpLevel") or 0)
    if not 0 <= mlp_level <= 0.9:
        raise ExecutorError(f"prune mlpLevel must be between 0 and 0.9; got {mlp_level}")
    shapes = _shapes(model.config, geo, stage, notes)
    channel_keep = _channel_keep(model.config, arch, mlp_level, notes)
    batches, windows = _analysis_windows(ctx, stage, model, tokenizer, seed, notes)
    mixers, mlps, score_kind, score_notes = unit_scores(
        model, arch, stage.strategy, windows, batch_size=ANALYSIS_BATCH_SIZE, seed=seed,
        device=ctx.device, reporter=reporter, channels=channel_keep is not None,
    )
    notes += score_notes
    plan = make_plan(mixers, mlps, shapes, channel_keep)
    cutting = channel_keep is not None or any(
        shapes[g.kind].units < g.groups * g.per_group for g in geo)
    predicted = params_before
    if cutting:
        model, removed = apply_plan(model, arch, plan)
        predicted = params_before - removed
    if param_count(model) != predicted:
        raise ExecutorError(f"pruned model has {param_count(model)} parameters; the cut "
                            f"predicts {predicted}")
    notes.append("no recovery fine-tune: follow with a train or lora stage to recover")
    save_model(model, tokenizer, ctx.output_dir)
    reloaded = _reloaded_params(ctx.output_dir)
    if reloaded != predicted:
        raise ExecutorError(f"the saved pruned model reloads with {reloaded} parameters; the "
                            f"cut predicts {predicted}")
    reporter.progress(1.0, "saved and reloaded")
    metrics: dict[str, Any] = {
        "strategy": stage.strategy,
        "level": stage.level,
        "architecture": arch.family,
        "paramsBefore": params_before,
        "params": predicted,
        "paramsReloaded": reloaded,
        "analysisBatches": batches,
        "scoreKind": score_kind,
        **_cut_metrics(stage, geo, mixers, shapes, plan),
    }
    if channel_keep is not None:
        metrics.update({"mlpLevel": mlp_level, "mlpChannelsAfter": channel_keep})
    return StageResult(output_dir=ctx.output_dir, metrics=metrics, notes=tuple(notes))


def _cut_metrics(stage: PruneStage, geo: list[Any], mixers: list[Any],
                 shapes: dict[str, Shape], plan: Any) -> dict[str, Any]:
    """Heads before and after, their scores and which were kept: softmax attention's query
    and KV heads, linear attention's value and key heads."""
    metrics: dict[str, Any] = {}
    attention = [s for s in mixers if s.kind == "attention"]
    linear = [s for s in mixers if s.kind == "linear_attention"]
    if attention:
        before = geo[attention[0].layer]
        metrics.update({
            "headsBefore": before.groups * before.per_group,
            "headsAfter": shapes["attention"].units,
            "kvHeadsBefore": before.groups,
            "kvHeadsAfter": shapes["attention"].groups,
            "scores": [[round(x, 6) for x in s.raw_by_group(stage.strategy)] for s in attention],
            "keptGroups": [plan.groups[s.layer] for s in attention],
            "keptHeads": [plan.units[s.layer] for s in attention],
        })
    if linear:
        before = geo[linear[0].layer]
        metrics.update({
            "valueHeadsBefore": before.groups * before.per_group,
            "valueHeadsAfter": shapes["linear_attention"].units,
            "keyHeadsBefore": before.groups,
            "keyHeadsAfter": shapes["linear_attention"].groups,
            "linearScores": [[round(x, 6) for x in s.raw_by_group(stage.strategy)]
                             for s in linear],
            "keptValueHeads": [plan.units[s.layer] for s in linear],
        })
    return metrics


def _reloaded_params(model_dir: Any) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM  # untyped in transformers
    return param_count(auto.from_pretrained(model_dir, dtype=torch.float32))


class PruneExecutor:
    """`prune` with strategy magnitude, gradient, activation-magnitude, entropy or random."""

    stage_type = "prune"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        stage = parse_stage(PruneStage, ctx.stage)
        if stage.strategy not in SUPPORTED:
            raise ExecutorError(
                f"prune strategy {stage.strategy!r} is not implemented by this executor; "
                f"it runs {', '.join(SUPPORTED)}"
            )
        seed = stage_seed(ctx)
        set_seed(seed)
        if stage.strategy == "magnitude":
            return _magnitude(ctx, stage, reporter, seed)
        return _structured(ctx, stage, reporter, seed)
