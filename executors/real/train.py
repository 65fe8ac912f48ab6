"""Full fine-tuning on the recipe's calibration corpus, and the training loop other stages reuse.

`run_training` is a plain, seeded loop (AdamW, a transformers scheduler, gradient
accumulation and clipping, optional autocast): on CPU two runs from the same seed give
byte-identical weights. `TrainExecutor` runs it for a `train` stage and records the loss curve.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from foundry.domain.values.stages import TrainStage
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.common import (
    load_model,
    max_positions,
    param_count,
    parse_stage,
    precision_note,
    save_model,
    set_seed,
    stage_seed,
)
from foundry.executors.real.data import corpus_for, token_windows

DEFAULT_STEPS = 50
DEFAULT_LEARNING_RATE = 1e-4


@dataclass
class LoopConfig:
    """How `run_training` trains; `progress` maps the loop onto a part of the stage's [0, 1]."""

    steps: int
    batch_size: int
    learning_rate: float
    gradient_accumulation: int = 1
    scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_gradient_norm: float = 1.0
    dtype: Any = None  # a torch dtype to autocast to; None or float32: no autocast
    device: str = "cpu"
    progress: tuple[float, float] = (0.0, 1.0)
    label: str = "train"
    extra_metrics: dict[str, float] = field(default_factory=dict)


def _optimizer(model: Any, cfg: LoopConfig) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def run_training(
    model: Any, windows: Any, cfg: LoopConfig, reporter: StageReporter
) -> list[dict[str, float]]:
    """Train `model` in place on rows of `windows` ([n, seq_len]); return the loss curve.

    Micro-batch k takes rows (k * batch_size + j) mod n, so windows are reused in order when
    the run needs more than there are. Each curve entry is {step, loss, learningRate}.
    """
    import torch
    from transformers import get_scheduler

    optimizer = _optimizer(model, cfg)
    schedule = get_scheduler(
        cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.steps,
    )
    autocast = cfg.dtype is not None and cfg.dtype != torch.float32
    device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(device_type) if autocast and cfg.dtype == torch.float16 else None
    n = int(windows.shape[0])
    every = max(1, cfg.steps // 20)
    start, span = cfg.progress[0], cfg.progress[1] - cfg.progress[0]
    curve: list[dict[str, float]] = []
    micro = 0
    model.train()
    for step in range(1, cfg.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.gradient_accumulation):
            rows = [(micro * cfg.batch_size + j) % n for j in range(cfg.batch_size)]
            micro += 1
            batch = windows[rows].to(cfg.device)
            with torch.autocast(device_type, dtype=cfg.dtype, enabled=autocast):
                loss = model(input_ids=batch, labels=batch).loss / cfg.gradient_accumulation
            (scaler.scale(loss) if scaler else loss).backward()
            total += float(loss.detach())
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.max_gradient_norm > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], cfg.max_gradient_norm
            )
        lr = float(optimizer.param_groups[0]["lr"])
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()
        if not math.isfinite(total):
            raise ExecutorError(f"{cfg.label}: loss is {total} at step {step}")
        curve.append({"step": step, "loss": round(total, 6), "learningRate": lr})
        if step % every == 0 or step == cfg.steps:
            reporter.progress(
                start + span * step / cfg.steps,
                f"{cfg.label} step {step}/{cfg.steps} loss {total:.4f}",
                {"loss": total, "step": float(step), **cfg.extra_metrics},
            )
    model.eval()
    return curve


def _settings(stage: TrainStage, ctx: StageContext, max_length: int, notes: list[str]
              ) -> tuple[int, float, int, Any]:
    """(steps, learning rate, sequence length, dtype) this worker trains with; each default
    taken, cap applied and field not honoured here is said in `notes`."""
    steps = stage.steps or DEFAULT_STEPS
    if stage.steps is None:
        notes.append(f"steps not set: ran {DEFAULT_STEPS}")
    lr = float(stage.learning_rate) if stage.learning_rate else DEFAULT_LEARNING_RATE
    if stage.learning_rate is None:
        notes.append(f"learningRate not set: used {DEFAULT_LEARNING_RATE:g}")
    seq_len = min(stage.sequence_length, max_length)
    if seq_len < stage.sequence_length:
        notes.append(
            f"sequenceLength {stage.sequence_length} capped to the model's "
            f"max_position_embeddings {seq_len}"
        )
    dtype, note = precision_note(stage.precision, ctx.device)
    notes += [note] if note else []
    if stage.dataset:
        notes.append(
            f"dataset {stage.dataset!r} is not fetched by this executor: trained on the "
            f"calibration corpus {ctx.recipe['calibrationCorpus'].get('name')!r}"
        )
    if stage.optimizations:
        notes.append(f"optimizations {stage.optimizations} not applied by this executor")
    return steps, lr, seq_len, dtype


class TrainExecutor:
    """`train`: full fine-tuning on windows of the recipe's calibration corpus."""

    stage_type = "train"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        stage = parse_stage(TrainStage, ctx.stage)
        notes: list[str] = []
        seed = stage_seed(ctx)
        set_seed(seed)
        corpus = corpus_for(ctx)
        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        reporter.progress(0.02, "model loaded")

        steps, lr, seq_len, dtype = _settings(stage, ctx, max_positions(model), notes)

        needed = steps * stage.batch_size * stage.gradient_accumulation
        windows = token_windows(
            tokenizer, corpus, split="calibration", seq_len=seq_len, max_windows=needed, seed=seed
        )
        if windows.shape[0] < needed:
            notes.append(
                f"the corpus holds {windows.shape[0]} windows of {seq_len} tokens; "
                f"{needed} were needed, so windows were reused"
            )
        cfg = LoopConfig(
            steps=steps, batch_size=stage.batch_size, learning_rate=lr,
            gradient_accumulation=stage.gradient_accumulation, scheduler=stage.scheduler,
            warmup_steps=math.ceil(stage.warmup_ratio * steps),
            weight_decay=stage.weight_decay, max_gradient_norm=stage.max_gradient_norm,
            dtype=dtype, device=ctx.device, progress=(0.05, 0.95),
        )
        started = time.perf_counter()
        curve = run_training(model, windows, cfg, reporter)
        elapsed = time.perf_counter() - started

        save_model(model, tokenizer, ctx.output_dir)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        curve_path = ctx.work_dir / "loss_curve.json"
        curve_path.write_text(json.dumps(curve, indent=1) + "\n", encoding="utf-8")
        tokens = needed * seq_len
        reporter.progress(1.0, "saved")
        metrics = {
            "initialLoss": curve[0]["loss"],
            "finalLoss": curve[-1]["loss"],
            "steps": steps,
            "tokens": tokens,
            "tokensPerSec": round(tokens / elapsed, 1) if elapsed > 0 else 0.0,
            "params": param_count(model),
            "sequenceLength": seq_len,
        }
        return StageResult(
            output_dir=ctx.output_dir, files=(curve_path,), metrics=metrics, notes=tuple(notes)
        )
