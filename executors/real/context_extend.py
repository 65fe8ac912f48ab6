"""`context-extend`: RoPE scaling for a longer context, optionally a few training steps.

The config gets RoPE scaling for `targetLength` (transformers 5 keeps it in
`config.rope_parameters`, which also accepts the older `rope_scaling` on load):
factor = targetLength / original max_position_embeddings, with `yarn`, `linear` or
`dynamic` (`ntk` and `dynamic-ntk` both map to transformers' `dynamic`, noted), and
`max_position_embeddings = targetLength` (except for dynamic NTK, which rescales beyond
max_position_embeddings at run time and so must keep the original value; noted). The model
is loaded with the new config, so the rotary embedding and any training use the scaled
frequencies. After saving, the config is read back and the scaling checked; a mismatch
raises.

What the family's `Architecture.rope` says is honoured: the keys it carries over
(`partial_rotary_factor`, Qwen3.5's multimodal `mrope_section` / `mrope_interleaved`) stay in
the new rope parameters, and a per-layer-type layout (Gemma 3: one dict for sliding and one
for global layers) scales only the layer types it names. A model whose context already
reaches `targetLength` is passed through unchanged, and the stage says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from foundry.domain.values.stages import ContextExtendStage
from foundry.executors.architectures import Architecture, for_config
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.common import (
    configure_torch,
    param_count,
    parse_stage,
    save_model,
    set_seed,
    stage_seed,
)
from foundry.executors.real.data import corpus_for, token_windows
from foundry.executors.real.train import LoopConfig, run_training

TRAINING_STEP_CAP = 10
TRAINING_SEQ_CAP = 1024
LEARNING_RATE = 5e-5
ROPE_TYPES = {"yarn": "yarn", "linear": "linear", "ntk": "dynamic", "dynamic-ntk": "dynamic"}


def _scaled_rope(config: Any, arch: Architecture) -> dict[str, Any]:
    """The rope dict that gets scaled: the model's, or the first scaled layer type's."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if arch.rope.layout == "per_layer_type":
        return dict(rope.get(arch.rope.scaled_layer_types[0]) or {})
    return rope


def _original_length(config: Any, arch: Architecture | None = None) -> int:
    rope = _scaled_rope(config, arch) if arch else dict(
        getattr(config, "rope_parameters", None) or {})
    original = rope.get("original_max_position_embeddings")
    if rope.get("rope_type", "default") != "default" and original:
        return int(original)
    return int(config.max_position_embeddings)


def rope_scaling(config: Any) -> dict[str, Any]:
    """The config's RoPE parameters (a flat dict; empty when none)."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    return dict(rope or {})


def _extended_config(
    stage: ContextExtendStage, config: Any, arch: Architecture, notes: list[str]
) -> dict[str, Any]:
    """The new rope parameters for the scaled dict (see `_apply`)."""
    original = _original_length(config, arch)
    factor = stage.target_length / original
    rope_type = ROPE_TYPES[stage.method]
    if stage.method != rope_type:
        notes.append(f"method {stage.method} runs as transformers' rope_type {rope_type!r}")
    rope = _scaled_rope(config, arch)
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10_000.0))
    params: dict[str, Any] = {"rope_type": rope_type, "factor": factor, "rope_theta": theta}
    if rope_type == "yarn":
        params["original_max_position_embeddings"] = original
    for key in arch.rope.carried_keys:
        if key in rope:
            params[key] = rope[key]
    return params


def context_reach(config: Any, arch: Architecture) -> int:
    """How far the model reaches now: max_position_embeddings, or what a dynamic scaling
    (which keeps max_position_embeddings) stretches it to."""
    rope = _scaled_rope(config, arch)
    stretched = 0
    if rope.get("rope_type", "default") != "default" and rope.get("factor"):
        stretched = int(_original_length(config, arch) * float(rope["factor"]))
    return max(int(config.max_position_embeddings), stretched)


def _apply(config: Any, arch: Architecture, params: dict[str, Any], notes: list[str]) -> None:
    if arch.rope.layout == "per_layer_type":
        rope = {k: dict(v) for k, v in dict(config.rope_parameters).items()}
        for layer_type in arch.rope.scaled_layer_types:
            rope[layer_type] = dict(params)
        kept = sorted(set(rope) - set(arch.rope.scaled_layer_types))
        notes.append(
            f"{arch.family}: scaled the rope of {', '.join(arch.rope.scaled_layer_types)} "
            f"layers only; {', '.join(kept)} layers keep theirs (their window is local)"
        )
        config.rope_parameters = rope
    else:
        config.rope_parameters = params


def _saved_params(config: Any, arch: Architecture) -> dict[str, Any]:
    return _scaled_rope(config, arch)


class ContextExtendExecutor:
    """`context-extend` with yarn, linear, ntk or dynamic-ntk RoPE scaling."""

    stage_type = "context-extend"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        stage = parse_stage(ContextExtendStage, ctx.stage)
        notes: list[str] = []
        seed = stage_seed(ctx)
        set_seed(seed)
        configure_torch()
        config = AutoConfig.from_pretrained(ctx.input_dir)
        arch = for_config(config)
        original = _original_length(config, arch)
        reach = context_reach(config, arch)
        if stage.target_length <= reach:
            return _already_long(ctx, stage, reach, arch, reporter)
        params = _extended_config(stage, config, arch, notes)
        _apply(config, arch, params, notes)
        if params["rope_type"] == "dynamic":
            notes.append(
                f"dynamic NTK rescales beyond max_position_embeddings at run time, so it stays "
                f"{original} (factor {params['factor']:g} reaches {stage.target_length})"
            )
        else:
            config.max_position_embeddings = stage.target_length
        expected_length = int(config.max_position_embeddings)
        auto: Any = AutoModelForCausalLM  # untyped in transformers
        model = auto.from_pretrained(ctx.input_dir, config=config, dtype=torch.float32)
        model = model.to(ctx.device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(ctx.input_dir)
        reporter.progress(0.1, f"rope {params['rope_type']} factor {params['factor']:g}")

        steps = _train_longer(ctx, stage, model, tokenizer, seed, reporter, notes)
        save_model(model, tokenizer, ctx.output_dir)

        _check_saved(ctx.output_dir, arch, params, expected_length)
        reporter.progress(1.0, "saved and verified")
        metrics = {
            "factor": params["factor"],
            "originalLength": original,
            "targetLength": stage.target_length,
            "maxPositionEmbeddings": expected_length,
            "ropeType": params["rope_type"],
            "trainingSteps": steps,
            "params": param_count(model),
            "architecture": arch.family,
        }
        return StageResult(output_dir=ctx.output_dir, metrics=metrics, notes=tuple(notes))


def _train_longer(ctx: StageContext, stage: ContextExtendStage, model: Any, tokenizer: Any,
                  seed: int, reporter: StageReporter, notes: list[str]) -> int:
    """The stage's trainingSteps (capped) on long windows of the calibration corpus; the
    steps run."""
    steps = min(stage.training_steps or 0, TRAINING_STEP_CAP)
    if stage.training_steps and steps < stage.training_steps:
        notes.append(f"trainingSteps {stage.training_steps} capped at {TRAINING_STEP_CAP}")
    if not steps:
        return 0
    seq_len = min(stage.target_length, TRAINING_SEQ_CAP)
    if seq_len < stage.target_length:
        notes.append(f"trained on windows of {seq_len} tokens, not {stage.target_length}")
    if stage.training_dataset:
        notes.append(
            f"trainingDataset {stage.training_dataset!r} is not fetched by this "
            "executor: trained on the calibration corpus"
        )
    windows = token_windows(
        tokenizer, corpus_for(ctx), split="calibration", seq_len=seq_len,
        max_windows=steps, seed=seed,
    )
    cfg = LoopConfig(
        steps=steps, batch_size=1, learning_rate=LEARNING_RATE, device=ctx.device,
        progress=(0.1, 0.9), label="context-extend",
    )
    run_training(model, windows, cfg, reporter)
    return steps


def _check_saved(output_dir: Path, arch: Architecture, params: dict[str, Any],
                 expected_length: int) -> None:
    """The saved config must carry the RoPE scaling and the length, read back as written."""
    from transformers import AutoConfig

    reread = AutoConfig.from_pretrained(output_dir)
    saved = _saved_params(reread, arch)
    if (
        saved.get("rope_type") != params["rope_type"]
        or saved.get("factor") != params["factor"]
        or int(reread.max_position_embeddings) != expected_length
    ):
        raise ExecutorError(
            f"the saved config does not carry the RoPE scaling: expected {params} and "
            f"max_position_embeddings {expected_length}, read back {saved} and "
            f"{reread.max_position_embeddings}"
        )


def _already_long(
    ctx: StageContext, stage: ContextExtendStage, original: int, arch: Architecture,
    reporter: StageReporter,
) -> StageResult:
    """The model already reaches targetLength: pass it through unchanged, and say so."""
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(ctx.input_dir.iterdir()):
        if path.is_file():
            shutil.copy2(path, ctx.output_dir / path.name)
    reporter.progress(1.0, "already long enough: copied unchanged")
    notes = [f"the model's context of {original} tokens already reaches targetLength "
             f"{stage.target_length}: rope left unchanged, no training"]
    metrics = {
        "factor": 1.0,
        "originalLength": original,
        "targetLength": stage.target_length,
        "maxPositionEmbeddings": original,
        "ropeType": "unchanged",
        "trainingSteps": 0,
        "architecture": arch.family,
    }
    return StageResult(output_dir=ctx.output_dir, metrics=metrics, notes=tuple(notes))
