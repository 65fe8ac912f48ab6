"""`prune`: unstructured magnitude pruning, or removal of whole attention KV groups.

- `magnitude`: global L1 pruning (`torch.nn.utils.prune.global_unstructured`) of every Linear
  weight except `lm_head` at `level`, a short recovery fine-tune with the masks attached (so
  the zeros stay zero), then `prune.remove`. The zeros are stored dense.
- `gradient`, `activation-magnitude`, `entropy`, `random`: structured removal of KV groups
  (one KV head and the query heads that share it), the same number in every layer because
  the config has one head count for the whole model. Rows of q/k/v and columns of o_proj are
  cut with `transformers.pytorch_utils.prune_linear_layer`; the config gets the new
  `num_attention_heads`, `num_key_value_heads` and an explicit `head_dim`. Importance per
  group: first-order Taylor |w * dL/dw| (gradient), mean |attention output| (activation-
  magnitude), mean attention entropy (entropy: the most diffuse groups go first) or a
  seeded random draw (random, the control). See `foundry.executors.real.prune_scores`.
"""

from __future__ import annotations

from typing import Any

from foundry.domain.values.stages import PruneStage
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
from foundry.executors.real.train import LoopConfig, run_training

STRUCTURED = ("gradient", "activation-magnitude", "entropy", "random")
SUPPORTED = ("magnitude", *STRUCTURED)
RECOVERY_STEP_CAP = 10
RECOVERY_LEARNING_RATE = 5e-5
ANALYSIS_BATCH_CAP = 8
BATCH_SIZE = 4
ANALYSIS_BATCH_SIZE = 2
SEQ_LEN = 128


def _prunable_linears(model: Any) -> list[tuple[str, Any]]:
    import torch

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "lm_head"
    ]


def _magnitude(
    ctx: StageContext, stage: PruneStage, reporter: StageReporter, seed: int
) -> StageResult:
    import torch
    from torch.nn.utils import prune as torch_prune

    prune: Any = torch_prune  # partly untyped

    corpus = corpus_for(ctx)
    model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
    linears = _prunable_linears(model)
    if not linears:
        raise ExecutorError("magnitude pruning found no Linear layers to prune")
    notes: list[str] = []
    steps = min(stage.analysis_steps, RECOVERY_STEP_CAP)
    params = [(module, "weight") for _name, module in linears]
    if stage.level > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=stage.level)
    reporter.progress(0.2, f"pruned {stage.level:.0%} of {len(linears)} Linear weights by |w|")
    final_loss = None
    if stage.level > 0 and steps > 0:
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
        final_loss = curve[-1]["loss"]
        capped = (
            f" (analysisSteps {stage.analysis_steps} capped at {RECOVERY_STEP_CAP})"
            if steps < stage.analysis_steps else ""
        )
        notes.append(
            f"recovery fine-tune with masks attached: {steps} steps{capped}, batch "
            f"{BATCH_SIZE}x{seq_len}, lr {RECOVERY_LEARNING_RATE:g}"
        )
    if stage.level > 0:
        for module, name in params:
            prune.remove(module, name)
    else:
        notes.append("level 0: nothing pruned")
    with torch.no_grad():
        zeros = sum(int((m.weight == 0).sum()) for _n, m in linears)
        total = sum(m.weight.numel() for _n, m in linears)
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


def _groups_to_remove(stage: PruneStage, config: Any, notes: list[str]) -> int:
    """How many KV groups each layer loses: the level, bounded by the minimums and validity."""
    heads, kv = int(config.num_attention_heads), int(config.num_key_value_heads)
    per_group = heads // kv
    wanted = round(stage.level * kv)
    allowed = min(
        wanted,
        kv - max(1, stage.min_kv_heads_per_layer),
        (heads - stage.min_heads_per_layer) // per_group,
    )
    allowed = max(0, allowed)
    if allowed < wanted:
        notes.append(
            f"level {stage.level} asks to remove {wanted} of {kv} KV groups per layer; removed "
            f"{allowed} to keep minHeadsPerLayer {stage.min_heads_per_layer} and "
            f"minKvHeadsPerLayer {stage.min_kv_heads_per_layer} ({heads} heads, {kv} KV heads)"
        )
    while allowed > 0 and not _valid_heads(config, (kv - allowed) * per_group, kv - allowed):
        notes.append(
            f"{config.model_type} rejects {(kv - allowed) * per_group} heads (hidden size "
            f"{config.hidden_size}): removing {allowed - 1} KV groups per layer instead"
        )
        allowed -= 1
    return allowed


def _valid_heads(config: Any, heads: int, kv: int) -> bool:
    """Whether the config class accepts these head counts (Llama wants hidden % heads == 0)."""
    values = config.to_dict()
    values.update(num_attention_heads=heads, num_key_value_heads=kv, head_dim=_head_dim(config))
    try:
        type(config).from_dict(values)
    except Exception:  # the strict config validators raise several types
        return False
    return True


def _head_dim(config: Any) -> int:
    heads = config.num_attention_heads
    return int(getattr(config, "head_dim", None) or config.hidden_size // heads)


def _attention_modules(model: Any) -> list[Any]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ExecutorError(f"structured pruning needs model.model.layers; {type(model).__name__}")
    modules = [getattr(layer, "self_attn", None) for layer in layers]
    for attn in modules:
        if attn is None or not all(
            hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            raise ExecutorError(
                f"structured pruning supports q/k/v/o_proj attention; {type(model).__name__} "
                "has another layout"
            )
    return modules


def _cut(model: Any, keep: list[list[int]]) -> None:
    """Keep only the KV groups `keep[layer]` in every layer; update the config."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer as _prune_linear_layer

    prune_linear_layer: Any = _prune_linear_layer  # typed for LongTensor, which torch lacks

    config = model.config
    heads, kv = int(config.num_attention_heads), int(config.num_key_value_heads)
    per_group, head_dim = heads // kv, _head_dim(config)
    for attn, groups in zip(_attention_modules(model), keep, strict=True):
        q_rows = torch.cat([
            torch.arange(g * per_group * head_dim, (g + 1) * per_group * head_dim) for g in groups
        ])
        kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups])
        attn.q_proj = prune_linear_layer(attn.q_proj, q_rows, dim=0)
        attn.k_proj = prune_linear_layer(attn.k_proj, kv_rows, dim=0)
        attn.v_proj = prune_linear_layer(attn.v_proj, kv_rows, dim=0)
        attn.o_proj = prune_linear_layer(attn.o_proj, q_rows, dim=1)
        for attr in ("num_heads", "num_attention_heads"):
            if hasattr(attn, attr):
                setattr(attn, attr, len(groups) * per_group)
        if hasattr(attn, "num_key_value_heads"):
            attn.num_key_value_heads = len(groups)
    config.num_attention_heads = len(keep[0]) * per_group
    config.num_key_value_heads = len(keep[0])
    config.head_dim = head_dim


def _most_important(row: list[float], count: int) -> list[int]:
    """The `count` groups of highest importance (ties: the lower index), in index order."""
    ranked = sorted(range(len(row)), key=lambda g: (-row[g], g))
    return sorted(ranked[:count])


def _structured(
    ctx: StageContext, stage: PruneStage, reporter: StageReporter, seed: int
) -> StageResult:
    from foundry.executors.real.prune_scores import group_scores

    eager = "eager" if stage.strategy == "entropy" else None
    model, tokenizer = load_model(ctx.input_dir, device=ctx.device, attn_implementation=eager)
    _attention_modules(model)
    config = model.config
    heads_before, kv_before = int(config.num_attention_heads), int(config.num_key_value_heads)
    params_before = param_count(model)
    notes: list[str] = []
    remove = _groups_to_remove(stage, config, notes)

    batches = 0
    windows = None
    if stage.strategy != "random":
        batches = min(stage.analysis_steps, ANALYSIS_BATCH_CAP)
        seq_len = min(SEQ_LEN, max_positions(model))
        windows = token_windows(
            tokenizer, corpus_for(ctx), split="calibration", seq_len=seq_len,
            max_windows=max(1, batches) * ANALYSIS_BATCH_SIZE, seed=seed,
        )
        capped = (
            f" (analysisSteps {stage.analysis_steps} capped at {ANALYSIS_BATCH_CAP})"
            if batches < stage.analysis_steps else ""
        )
        notes.append(
            f"importance from {batches} calibration batches of {ANALYSIS_BATCH_SIZE}x{seq_len} "
            f"tokens{capped}"
        )
    else:
        corpus_for(ctx)  # the corpus is still checked: the recipe pins it
    importance, scores, kind = group_scores(
        model, stage.strategy, windows, batch_size=ANALYSIS_BATCH_SIZE, seed=seed,
        device=ctx.device, reporter=reporter,
    )
    keep = [_most_important(row, kv_before - remove) for row in importance]
    if remove:
        _cut(model, keep)
    notes.append("no recovery fine-tune: follow with a train or lora stage to recover")
    save_model(model, tokenizer, ctx.output_dir)
    reporter.progress(1.0, "saved")
    metrics: dict[str, Any] = {
        "strategy": stage.strategy,
        "level": stage.level,
        "headsBefore": heads_before,
        "headsAfter": int(model.config.num_attention_heads),
        "kvHeadsBefore": kv_before,
        "kvHeadsAfter": int(model.config.num_key_value_heads),
        "paramsBefore": params_before,
        "params": param_count(model),
        "analysisBatches": batches,
        "scoreKind": kind,
        "scores": [[round(float(s), 6) for s in row] for row in scores],
        "keptGroups": keep,
    }
    return StageResult(output_dir=ctx.output_dir, metrics=metrics, notes=tuple(notes))


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
