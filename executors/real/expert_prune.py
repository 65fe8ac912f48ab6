"""`expert-prune`: drop the least salient experts of every sparse layer, router rows with them.

How many: `keepExperts`, `keepExpertsPerLayer` (the same number: transformers configs hold one
`num_experts` for every layer) or `prunePct` (a percentage: 50 drops half). Never fewer than
`num_experts_per_tok`, which is kept: such a prune is refused naming the field.

Which: the experts with the highest `metric` in each layer's activation profile (see
`activation_profile`): `reap` (default), `activation_count`, `router_l2`,
`activation_magnitude`, or `random` (a seeded control). The profile is `importanceJson`
(sha256:<hex> of a stored profile, or a path), else the one an `expert-activation-profile`
stage left with the input model, else one taken here over `profileSteps` windows.

Kept experts keep their relative order and are renumbered 0..k-1; the fused tensors
(`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]) and the router's weight rows [E, H] are
indexed with the same list, so expert j and router row j stay one expert. Any other tensor of
the sparse block with E rows would fall out of step: the prune refuses rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from foundry.domain.values.stages import ExpertPruneStage
from foundry.executors.architectures import Architecture, for_config
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.activation_profile import (
    calibration_windows,
    find_profile,
    profile_hash,
    profile_model,
)
from foundry.executors.real.common import (
    load_model,
    param_count,
    parse_stage,
    save_model,
    set_seed,
    stage_seed,
)

METRICS = ("reap", "activation_count", "router_l2", "activation_magnitude", "random")
_PROFILE_KEY = {"reap": "reap", "activation_count": "count", "router_l2": "routerL2",
                "activation_magnitude": "activationMagnitude"}
DETECTED_LAYOUT = "mlp-experts-fused"  # transformers 5: one 3-D tensor per projection
PROFILE_SEQ_LEN = 256


def sparse_layers(model: Any, arch: Architecture) -> list[int]:
    return [i for i, layer in enumerate(model.model.layers) if arch.is_sparse(layer)]


def detect_layout(model: Any, arch: Architecture) -> str:
    """The expert tensor layout of the model, or an error saying what was found."""
    assert arch.moe is not None
    moe = arch.moe
    for i in sparse_layers(model, arch):
        experts = getattr(getattr(model.model.layers[i], moe.module), moe.experts)
        gate_up = getattr(experts, moe.gate_up_proj, None)
        down = getattr(experts, moe.down_proj, None)
        if gate_up is None or down is None or gate_up.dim() != 3 or down.dim() != 3:
            raise ExecutorError(
                f"layer {i}: experts are not fused 3-D tensors {moe.gate_up_proj}/"
                f"{moe.down_proj}; expert-prune slices only the {DETECTED_LAYOUT} layout")
    return DETECTED_LAYOUT


def keep_count(stage: ExpertPruneStage, n: int, top_k: int) -> int:
    """How many experts each layer keeps; a count the model cannot run is refused."""
    asked: dict[str, int] = {}
    if stage.keep_experts is not None:
        asked["keepExperts"] = stage.keep_experts
    if stage.keep_experts_per_layer is not None:
        asked["keepExpertsPerLayer"] = stage.keep_experts_per_layer
    if stage.prune_pct is not None:
        pct = float(stage.prune_pct)
        if not 1 <= pct < 100:
            raise ExecutorError(
                f"prunePct is a percentage of experts to drop, 1 <= prunePct < 100 "
                f"(50 drops half); got {stage.prune_pct}")
        asked["prunePct"] = n - round(n * pct / 100)
    if not asked:
        raise ExecutorError("expert-prune needs keepExperts, keepExpertsPerLayer or prunePct")
    if len(set(asked.values())) > 1:
        raise ExecutorError(f"keepExperts, keepExpertsPerLayer and prunePct disagree: {asked}")
    field, keep = next(iter(asked.items()))
    if keep < top_k:
        raise ExecutorError(
            f"{field} would keep {keep} experts per layer, fewer than num_experts_per_tok="
            f"{top_k} (the router's top-k, which expert-prune keeps): keep at least {top_k}")
    if keep >= n:
        raise ExecutorError(f"{field} keeps {keep} of {n} experts: nothing to prune")
    return keep


def layer_scores(profile: Mapping[str, Any], layers: Sequence[int], n: int, metric: str,
                 seed: int) -> dict[int, list[float]]:
    """Per sparse layer, one score per expert (higher = keep)."""
    import torch

    if metric == "random":
        gen = torch.Generator().manual_seed(seed)
        return {i: torch.rand(n, generator=gen).tolist() for i in layers}
    by_layer = {int(e["layer"]): e for e in profile.get("layers", []) if "experts" in e}
    scores: dict[int, list[float]] = {}
    for i in layers:
        entry = by_layer.get(i)
        values = entry["experts"].get(_PROFILE_KEY[metric]) if entry else None
        if not isinstance(values, list) or len(values) != n:
            raise ExecutorError(
                f"importanceJson: the profile has no {n}-expert {_PROFILE_KEY[metric]} entry "
                f"for sparse layer {i}; was it taken on another model?")
        scores[i] = [float(v) for v in values]
    return scores


def choose(scores: Sequence[float], keep: int) -> list[int]:
    """The `keep` highest-scoring experts, ascending by index (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda e: (-scores[e], e))
    return sorted(order[:keep])


def slice_experts(model: Any, arch: Architecture, keep: Mapping[int, Sequence[int]]) -> int:
    """Keep `keep[layer]` experts of each sparse layer in place; returns router rows cut."""
    import torch

    assert arch.moe is not None
    moe = arch.moe
    cut = 0
    new_n = {len(v) for v in keep.values()}
    if len(new_n) != 1:
        raise ExecutorError(f"every sparse layer must keep the same number of experts: {new_n}")
    k = new_n.pop()
    for i, kept in keep.items():
        block = getattr(model.model.layers[i], moe.module)
        experts, router = getattr(block, moe.experts), getattr(block, moe.router)
        n = int(getattr(experts, moe.gate_up_proj).shape[0])
        index = torch.tensor(list(kept), dtype=torch.long)
        sliced = {id(getattr(experts, moe.gate_up_proj)), id(getattr(experts, moe.down_proj)),
                  id(router.weight)}
        for name, param in block.named_parameters():
            shared = moe.shared_expert and name.startswith(f"{moe.shared_expert}.")
            if id(param) not in sliced and param.dim() and param.shape[0] == n and not shared:
                raise ExecutorError(
                    f"layer {i}: {moe.module}.{name} has one row per expert and expert-prune "
                    f"does not know how to slice it; refusing rather than misalign it")
        for holder, name in ((experts, moe.gate_up_proj), (experts, moe.down_proj),
                             (router, "weight"), (router, "bias")):
            param = getattr(holder, name, None)
            if param is None:
                continue
            setattr(holder, name, torch.nn.Parameter(param.data[index.to(param.device)].clone(),
                                                     requires_grad=param.requires_grad))
        for holder in (experts, router):
            if hasattr(holder, "num_experts"):
                holder.num_experts = k
        cut += n - k
    setattr(model.config, moe.experts_key, k)
    return cut


def _checked_shape(model: Any, arch: Any, stage: ExpertPruneStage) -> tuple[str, int, int]:
    """(expert tensor layout, experts per layer, experts per token), each checked against
    what the stage says the model is."""
    layout = detect_layout(model, arch)
    if stage.expert_tensor_layout not in ("auto", layout):
        raise ExecutorError(
            f"expertTensorLayout {stage.expert_tensor_layout!r} does not match this model: "
            f"its experts are {layout} (transformers 5 fuses them); use 'auto'")
    n = int(getattr(model.config, arch.moe.experts_key))
    top_k = int(getattr(model.config, arch.moe.top_k_key))
    if stage.original_experts_per_layer not in (None, n):
        raise ExecutorError(f"originalExpertsPerLayer is {stage.original_experts_per_layer} "
                            f"but the model has {n} experts per layer")
    return layout, n, top_k


def _importance(ctx: StageContext, stage: ExpertPruneStage, metric: str, model: Any,
                tokenizer: Any, reporter: StageReporter, notes: list[str]
                ) -> tuple[dict[str, Any], str | None]:
    """The activation profile the scores come from and its hash: the stage's importanceJson
    or an earlier profile stage's, else profiled here; nothing for the random metric."""
    if metric == "random":
        return {}, None
    found = find_profile(ctx, stage.importance_json)
    if found is not None:
        return found
    windows = calibration_windows(ctx, model, tokenizer, seq_len=PROFILE_SEQ_LEN,
                                  max_windows=stage.profile_steps)
    profile = profile_model(
        model, windows, progress=lambda f: reporter.progress(0.6 * f, "profiling"))
    notes.append(f"profiled here: {profile['windows']} windows of "
                 f"{profile['seqLen']} tokens (no importanceJson, no profile stage)")
    return profile, profile_hash(profile)


class ExpertPruneExecutor:
    """`expert-prune` on a transformers 5 MoE model (Qwen3-MoE, Qwen3.5-MoE)."""

    stage_type = "expert-prune"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        stage = parse_stage(ExpertPruneStage, ctx.stage)
        seed = stage_seed(ctx)
        set_seed(seed)
        notes: list[str] = []
        metric = stage.metric or "reap"
        if metric not in METRICS:
            raise ExecutorError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        arch = for_config(model.config)
        if arch.moe is None or not sparse_layers(model, arch):
            raise ExecutorError(f"expert-prune needs a mixture-of-experts model; "
                                f"{arch.family} has no sparse layer here")
        layout, n, top_k = _checked_shape(model, arch, stage)
        keep = keep_count(stage, n, top_k)
        layers = sparse_layers(model, arch)

        profile, importance = _importance(ctx, stage, metric, model, tokenizer, reporter, notes)
        if stage.per_layer_normalized is not None:
            notes.append("perLayerNormalized has no effect: every layer keeps the same count, "
                         "chosen within the layer")
        scores = layer_scores(profile, layers, n, metric, seed)
        kept = {i: choose(scores[i], keep) for i in layers}
        params_before = param_count(model)
        cut = slice_experts(model, arch, kept)
        reporter.progress(0.8, f"kept {keep} of {n} experts in {len(layers)} layers")
        save_model(model, tokenizer, ctx.output_dir)
        reloaded, _ = load_model(ctx.output_dir)
        reloaded_params = param_count(reloaded)
        if reloaded_params != param_count(model):
            raise ExecutorError(f"the pruned model reloads with {reloaded_params} parameters, "
                                f"not {param_count(model)}")
        renamed = sum(1 for v in kept.values() for new, old in enumerate(v) if new != old)
        reporter.progress(1.0, "saved")
        return StageResult(
            output_dir=ctx.output_dir,
            metrics={
                "metric": metric,
                "importanceInput": importance,
                "expertTensorLayout": layout,
                "originalExpertsPerLayer": n,
                "keptExpertsPerLayer": keep,
                "numExpertsPerTok": top_k,
                "expertsDropped": cut,
                "expertsRenamed": renamed,
                "routerSlicedLayers": len(layers),
                "keptExperts": {str(i): list(v) for i, v in kept.items()},
                "paramsBefore": params_before,
                "paramsAfter": reloaded_params,
                "paramReduction": round(1 - reloaded_params / params_before, 6),
                "activeParamsNote": f"top-{top_k} of {keep} experts per token",
            },
            notes=tuple(notes),
        )

