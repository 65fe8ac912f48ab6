"""`lora`: train a peft LoRA adapter on the calibration corpus, merge it or ship it beside.

The adapter (adapter_model.safetensors, adapter_config.json) is always an output file. With
`mergeAfter` the output model is `merge_and_unload()`; without it the output model is the
input model unchanged and the adapter is the stage's product. `quantize: true` (QLoRA) is
recorded as a note and run unquantized: this executor has no bitsandbytes path.
"""

from __future__ import annotations

import math
from typing import Any

from foundry.domain.values.stages import LoraStage
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


def _peft_model(model: Any, stage: LoraStage) -> Any:
    from peft import LoraConfig, get_peft_model

    present = {name.split(".")[-1] for name, _m in model.named_modules()}
    missing = [m for m in stage.target_modules if m not in present]
    if missing or not stage.target_modules:
        raise ExecutorError(
            f"lora targetModules {missing or stage.target_modules} match no module of "
            f"{type(model).__name__}"
        )
    config = LoraConfig(
        r=stage.rank,
        lora_alpha=stage.alpha or 2 * stage.rank,
        lora_dropout=stage.dropout,
        target_modules=list(stage.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


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
        peft_model = _peft_model(model, stage)
        trainable, total = trainable_count(peft_model), param_count(peft_model)
        reporter.progress(0.05, f"LoRA r={stage.rank}: {trainable} of {total} params trainable")
        cfg = LoopConfig(
            steps=steps, batch_size=stage.batch_size, learning_rate=float(stage.learning_rate),
            device=ctx.device, progress=(0.05, 0.9), label="lora",
        )
        curve = run_training(peft_model, windows, cfg, reporter)

        adapter_dir = ctx.work_dir / "adapter"
        peft_model.save_pretrained(adapter_dir, safe_serialization=True)
        files = tuple(adapter_dir / name for name in ADAPTER_FILES)
        for path in files:
            if not path.is_file():
                raise ExecutorError(f"peft did not write {path.name} into {adapter_dir}")
        if stage.merge_after:
            output = peft_model.merge_and_unload()
        else:
            output = peft_model.unload()
            notes.append(
                "mergeAfter=false: the output model is the input model; the adapter "
                "(adapter_model.safetensors, adapter_config.json) is a separate output"
            )
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
        }
        return StageResult(
            output_dir=ctx.output_dir, files=files, metrics=metrics, notes=tuple(notes)
        )
