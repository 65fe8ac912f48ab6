"""`compensation-lora`: distil a teacher into a LoRA on the pruned student.

Teacher: `teacher` names a local model directory, or one of `base` / `source` / `pre-prune` /
`auto` / `default`, which all mean the run's source model (`StageContext.base_model_dir`). That
is the model as it was before expert-prune when expert-prune is the first stage that changes
weights (profile -> expert-prune -> compensation-lora, as the seed's release did); a recipe
that trains before pruning should name its teacher by path. The teacher must share the
student's vocabulary: the logits are compared token by token.

Loss on calibration windows (the recipe's corpus): `kl_logits` is
KL(softmax(teacher / T) || softmax(student / T)) x T^2 (Hinton's scaling, `kdTemperature` T);
`mse_hidden` is the mean squared error between the last hidden states (both models share the
hidden size: expert pruning does not change it); `both` is their sum. Only the LoRA factors
train (`loraRank`, `loraAlpha`, `learningRate`, AdamW). `targetModules` map through the
family's architecture like the `lora` stage (empty: q/k/v/o_proj). `mergedAtSave` merges the
adapter into the weights; otherwise the model passes through and the adapter is an output.
On a CPU worker the step count is capped at `CPU_STEP_CAP` and the cap is recorded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from foundry.domain.values.stages import CompensationLoraStage
from foundry.executors.architectures import for_config
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
from foundry.executors.real.lora import map_targets

CPU_STEP_CAP = 40
SEQ_LEN = 128
BATCH = 2
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
SOURCE_TEACHER = ("", "base", "source", "pre-prune", "auto", "default")


def teacher_dir(ctx: StageContext, teacher: str) -> tuple[Path, str]:
    """Where the teacher model is, and how it was chosen."""
    if teacher.strip().lower() in SOURCE_TEACHER:
        return ctx.base_model_dir, "the run's source model"
    path = Path(teacher).expanduser()
    if not (path / "config.json").is_file():
        raise ExecutorError(
            f"teacher {teacher!r} is no local model directory (no config.json); use a path or "
            f"one of {', '.join(repr(t) for t in SOURCE_TEACHER[1:])} for the run's source")
    return path, str(path)


def kd_loss(student: Any, teacher: Any, loss_type: str, temperature: float) -> Any:
    """The distillation loss between two model outputs (with hidden states)."""
    import torch.nn.functional as functional

    total = None
    if loss_type in ("kl_logits", "both"):
        s = functional.log_softmax(student.logits.float() / temperature, dim=-1)
        t = functional.log_softmax(teacher.logits.float() / temperature, dim=-1)
        kl = functional.kl_div(s.flatten(0, 1), t.flatten(0, 1), log_target=True,
                               reduction="batchmean") * temperature ** 2
        total = kl
    if loss_type in ("mse_hidden", "both"):
        mse = functional.mse_loss(student.hidden_states[-1].float(),
                                  teacher.hidden_states[-1].float())
        total = mse if total is None else total + mse
    if total is None:
        raise ExecutorError(f"lossType {loss_type!r} is not kl_logits, mse_hidden or both")
    return total


class CompensationLoraExecutor:
    """`compensation-lora`: knowledge distillation into a peft LoRA."""

    stage_type = "compensation-lora"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        import torch

        stage = parse_stage(CompensationLoraStage, ctx.stage)
        seed = stage_seed(ctx)
        set_seed(seed)
        notes: list[str] = []
        student, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        teacher, chosen = _teacher(ctx, stage, student)
        for quant in (stage.teacher_quant, stage.student_quant):
            if quant and quant != "fp16":
                notes.append(f"{quant} quantization of teacher/student needs bitsandbytes: "
                             f"ran in float32")
        steps = stage.steps
        if ctx.device == "cpu" and steps > CPU_STEP_CAP:
            notes.append(f"steps {steps} capped at {CPU_STEP_CAP} on a CPU worker")
            steps = CPU_STEP_CAP
        model, targets = _with_lora(student, stage)
        seq_len = min(SEQ_LEN, max_positions(student))
        windows = token_windows(tokenizer, corpus_for(ctx), split="calibration",
                                seq_len=seq_len, max_windows=steps * BATCH, seed=seed)
        temperature = float(stage.kd_temperature)
        if temperature <= 0:
            raise ExecutorError(f"kdTemperature must be > 0, got {stage.kd_temperature}")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(stage.learning_rate), weight_decay=0.0)
        curve = _distill(model, teacher, windows, stage, temperature, steps, optimizer,
                         ctx.device, reporter)
        trainable, total = trainable_count(model), param_count(model)
        files = _save(model, tokenizer, stage, ctx, notes)
        reporter.progress(1.0, "saved")
        return StageResult(
            output_dir=ctx.output_dir,
            files=files,
            metrics={
                "teacher": chosen,
                "lossType": stage.loss_type,
                "kdTemperature": temperature,
                "steps": steps,
                "initialLoss": curve[0]["loss"],
                "finalLoss": curve[-1]["loss"],
                "lossCurve": curve,
                "trainableParams": trainable,
                "params": total,
                "targetMap": targets.record,
                "merged": stage.merged_at_save,
                "windows": int(windows.shape[0]),
                "seqLen": seq_len,
            },
            notes=tuple(notes),
        )


def _teacher(ctx: StageContext, stage: CompensationLoraStage, student: Any) -> tuple[Any, str]:
    """The teacher model (loaded) and which it is; its vocabulary must be the student's."""
    where, chosen = teacher_dir(ctx, stage.teacher)
    teacher, _ = load_model(where, device=ctx.device)
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ExecutorError(f"teacher ({chosen}) has vocab_size {teacher.config.vocab_size}, "
                            f"the student {student.config.vocab_size}: logits cannot be "
                            f"compared")
    return teacher, chosen


def _with_lora(student: Any, stage: CompensationLoraStage) -> tuple[Any, Any]:
    """The student wrapped with LoRA on the stage's targets (mapped for its family)."""
    from peft import LoraConfig, get_peft_model

    targets = map_targets(student, for_config(student.config),
                          list(stage.target_modules) or list(DEFAULT_TARGETS))
    extra: dict[str, Any] = {}
    if targets.parameters:
        extra["target_parameters"] = targets.parameters
    config = LoraConfig(r=stage.lora_rank, lora_alpha=stage.lora_alpha, lora_dropout=0.0,
                        target_modules=targets.modules, task_type="CAUSAL_LM", **extra)
    return get_peft_model(student, config), targets


def _distill(model: Any, teacher: Any, windows: Any, stage: CompensationLoraStage,
             temperature: float, steps: int, optimizer: Any, device: str,
             reporter: StageReporter) -> list[dict[str, float]]:
    """`steps` distillation steps of the student towards the teacher; the loss curve."""
    import torch

    n = int(windows.shape[0])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    curve: list[dict[str, float]] = []
    model.train()
    teacher.eval()
    for step in range(1, steps + 1):
        rows = [((step - 1) * BATCH + j) % n for j in range(BATCH)]
        batch = windows[rows].to(device)
        with torch.no_grad():
            t_out = teacher(input_ids=batch, output_hidden_states=True, use_cache=False)
        s_out = model(input_ids=batch, output_hidden_states=True, use_cache=False)
        loss = kd_loss(s_out, t_out, stage.loss_type, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ExecutorError(f"distillation loss is {value} at step {step}")
        curve.append({"step": step, "loss": round(value, 6)})
        reporter.progress(0.9 * step / steps, "distilling", {"loss": value})
    return curve


def _save(model: Any, tokenizer: Any, stage: CompensationLoraStage, ctx: StageContext,
          notes: list[str]) -> tuple[Path, ...]:
    """The merged model, or the input model with the adapter as a separate output (its
    files returned)."""
    files: tuple[Path, ...] = ()
    if stage.merged_at_save:
        output = model.merge_and_unload()
    else:
        adapter = ctx.work_dir / "adapter"
        model.save_pretrained(str(adapter), safe_serialization=True)
        files = tuple(sorted(p for p in adapter.iterdir() if p.is_file()))
        output = model.unload()
        notes.append("mergedAtSave=false: the output model is the input model; the "
                     "adapter is a separate output")
    save_model(output, tokenizer, ctx.output_dir)
    return files
