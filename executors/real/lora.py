"""`lora`: train a peft LoRA adapter on the calibration corpus, merge it or ship it beside.

The adapter (adapter_model.safetensors, adapter_config.json) is always an output file. With
`mergeAfter` the output model is `merge_and_unload()`; without it the output model is the
input model unchanged and the adapter is the stage's product. `quantize: true` (QLoRA) is
recorded as a note and run unquantized: this executor has no bitsandbytes path.

`targetModules` are recipe names (`q_proj`, ..., `down_proj`) mapped onto the model through
its family's `Architecture` (`foundry.executors.architectures`): on a Gated DeltaNet layer
q/k/v_proj reach the fused `in_proj_qkv` and o_proj `out_proj`; on a sparse MLP,
gate/up/down_proj reach the shared expert's Linears and the fused expert tensors (through
peft's `target_parameters`). A name the maps do not know is matched against the model's
Linear module names as written (`lm_head`, `in_proj_z`). The mapping is recorded in the
stage's metrics (`targetMap`); a target that reaches nothing is an error, never skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry.domain.values.stages import LoraStage
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
    trainable_count,
)
from foundry.executors.real.data import corpus_for, token_windows
from foundry.executors.real.train import LoopConfig, run_training

STEPS_PER_EPOCH_CAP = 30
SEQ_LEN = 256
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass
class TargetMap:
    """Where each recipe target landed: full module and parameter names, and per layer kind."""

    modules: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    record: dict[str, dict[str, Any]] = field(default_factory=dict)


def map_targets(model: Any, arch: Architecture, targets: list[str]) -> TargetMap:
    """The modules and fused parameters each of `targets` reaches; unmatched ones raise."""
    import torch

    if not targets:
        raise ExecutorError("lora targetModules is empty: name at least one module")
    layers = model.model.layers
    kinds = arch.layer_kinds_of(model.config)
    linear_names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    out = TargetMap()
    missing: list[str] = []
    for target in targets:
        modules: list[str] = []
        parameters: list[str] = []
        by_kind: dict[str, set[str]] = {}
        for i, (layer, kind) in enumerate(zip(layers, kinds, strict=True)):
            sparse = arch.is_sparse(layer)
            maps = [arch.lora_targets.get(kind, {}),
                    arch.lora_moe_targets if sparse else arch.lora_mlp_targets]
            for path in (p for m in maps for p in m.get(target, ())):
                modules.append(f"model.layers.{i}.{path}")
                by_kind.setdefault(kind, set()).add(path)
            for path in arch.lora_parameter_targets.get(target, ()) if sparse else ():
                parameters.append(f"model.layers.{i}.{path}")
                by_kind.setdefault(f"{kind} experts", set()).add(path)
        if not modules and not parameters:  # not a mapped name: match Linear names as written
            modules = sorted(n for n in linear_names if n == target or n.endswith(f".{target}"))
            if modules:
                by_kind["as written"] = {target}
        absent = [m for m in modules if m not in linear_names]
        if absent:
            raise ExecutorError(
                f"lora target {target!r}: the {arch.family} map names {absent[0]}, which is no "
                f"Linear module of {type(model).__name__}"
            )
        if not modules and not parameters:
            missing.append(target)
            continue
        out.modules += modules
        out.parameters += parameters
        out.record[target] = {
            **{kind: sorted(paths) for kind, paths in by_kind.items()},
            "modules": len(set(modules)),
            "parameters": len(set(parameters)),
        }
    if missing:
        known = sorted({t for m in (*arch.lora_targets.values(), arch.lora_mlp_targets,
                                    arch.lora_moe_targets, arch.lora_parameter_targets)
                        for t in m})
        raise ExecutorError(
            f"lora targetModules {missing} match no module of {type(model).__name__} "
            f"({arch.family}); its map knows {', '.join(known)}, or name a Linear module"
        )
    out.modules = sorted(set(out.modules))
    out.parameters = sorted(set(out.parameters))
    return out


def _peft_model(model: Any, stage: LoraStage, notes: list[str]) -> tuple[Any, TargetMap]:
    from peft import LoraConfig, get_peft_model

    targets = map_targets(model, for_config(model.config), list(stage.target_modules))
    extra: dict[str, Any] = {}
    dropout = float(stage.dropout)
    if targets.parameters:
        extra["target_parameters"] = targets.parameters
        if dropout:
            # peft wraps fused expert tensors in a ParamWrapper, which refuses dropout, and its
            # LoraConfig has one dropout for every target.
            notes.append(f"dropout {dropout:g} ran as 0: peft's LoRA on fused expert tensors "
                         "(target_parameters) takes no dropout")
            dropout = 0.0
    config = LoraConfig(
        r=stage.rank,
        lora_alpha=stage.alpha or 2 * stage.rank,
        lora_dropout=dropout,
        target_modules=targets.modules,  # never None: peft would pick defaults of its own
        task_type="CAUSAL_LM",
        **extra,
    )
    return get_peft_model(model, config), targets


def _unhonoured(stage: LoraStage, ctx: StageContext) -> list[str]:
    """Notes for what the stage asks that this executor does not do (QLoRA, data sets)."""
    notes: list[str] = []
    if stage.quantize:
        notes.append(
            f"quantize=true needs bitsandbytes and a GPU: ran unquantized on {ctx.device}"
            if ctx.device == "cpu"
            else f"quantize=true ({stage.quantize_bits}-bit QLoRA) is not implemented by "
            f"this executor: ran unquantized on {ctx.device}"
        )
    if stage.dataset:
        notes.append(
            f"dataset {stage.dataset!r} is not fetched by this executor: trained on the "
            f"calibration corpus {ctx.recipe['calibrationCorpus'].get('name')!r}"
        )
    return notes


def _adapter_and_output(peft_model: Any, stage: LoraStage, adapter_dir: Path,
                        notes: list[str]) -> tuple[tuple[Path, ...], Any]:
    """The adapter's files (saved, each checked) and the output model: merged, or the input
    model again when mergeAfter is false."""
    peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    files = tuple(adapter_dir / name for name in ADAPTER_FILES)
    for path in files:
        if not path.is_file():
            raise ExecutorError(f"peft did not write {path.name} into {adapter_dir}")
    if stage.merge_after:
        return files, peft_model.merge_and_unload()
    notes.append(
        "mergeAfter=false: the output model is the input model; the adapter "
        "(adapter_model.safetensors, adapter_config.json) is a separate output"
    )
    return files, peft_model.unload()


class LoraExecutor:
    """`lora`: adapter training on windows of the recipe's calibration corpus."""

    stage_type = "lora"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        stage = parse_stage(LoraStage, ctx.stage)
        notes: list[str] = []
        seed = stage_seed(ctx)
        set_seed(seed)
        corpus = corpus_for(ctx)
        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        notes += _unhonoured(stage, ctx)
        seq_len = min(SEQ_LEN, max_positions(model))
        windows = token_windows(
            tokenizer, corpus, split="calibration", seq_len=seq_len,
            max_windows=STEPS_PER_EPOCH_CAP * stage.batch_size, seed=seed,
        )
        per_epoch = min(STEPS_PER_EPOCH_CAP, math.ceil(int(windows.shape[0]) / stage.batch_size))
        steps = stage.epochs * per_epoch
        notes.append(
            f"{stage.epochs} epoch(s) of {per_epoch} steps (at most {STEPS_PER_EPOCH_CAP} per "
            f"epoch) over {windows.shape[0]} windows of {seq_len} tokens, batch {stage.batch_size}"
        )
        peft_model, targets = _peft_model(model, stage, notes)
        trainable, total = trainable_count(peft_model), param_count(peft_model)
        reporter.progress(0.05, f"LoRA r={stage.rank}: {trainable} of {total} params trainable")
        cfg = LoopConfig(
            steps=steps, batch_size=stage.batch_size, learning_rate=float(stage.learning_rate),
            device=ctx.device, progress=(0.05, 0.9), label="lora",
        )
        curve = run_training(peft_model, windows, cfg, reporter)

        files, output = _adapter_and_output(peft_model, stage, ctx.work_dir / "adapter", notes)
        save_model(output, tokenizer, ctx.output_dir)
        reporter.progress(1.0, "saved")
        metrics = {
            "trainableParams": trainable,
            "params": param_count(output),
            "initialLoss": curve[0]["loss"],
            "finalLoss": curve[-1]["loss"],
            "steps": steps,
            "rank": stage.rank,
            "alpha": stage.alpha or 2 * stage.rank,
            "merged": stage.merge_after,
            "targetMap": targets.record,
        }
        return StageResult(
            output_dir=ctx.output_dir, files=files, metrics=metrics, notes=tuple(notes)
        )
