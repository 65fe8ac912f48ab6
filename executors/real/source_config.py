"""`source-config`: the front bookend of a recipe, applied to the model and recorded.

- `contextLength`: the context the forged model must support. The tokenizer's
  `model_max_length` is set to it. The model must reach it already, or a later
  `context-extend` stage of the recipe must; otherwise the stage fails up front rather than
  ship a model that silently truncates.
- `tokenizer`: a local directory holding a tokenizer, or a hub id in the huggingface_hub cache,
  that replaces the model's own. Every id it can emit must have an embedding row.
- `inputModalities`: a text model takes `text`; anything else needs a `modality` stage, which
  this foundry refuses, so it is refused here with that reason.
- `targetDevices`, `targetBatchSize`: recorded (the quant and eval stages read the recipe).

The model's weights are copied byte for byte; `metrics.changed` lists every change made.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundry.domain.values.stages import SourceConfigStage
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.common import parse_stage, quiet_transformers


def _reach(model_dir: Path) -> int:
    """How many positions the model takes now (a dynamic rope stretches past the config)."""
    from transformers import AutoConfig

    from foundry.executors.architectures import for_config
    from foundry.executors.real.context_extend import context_reach

    config = AutoConfig.from_pretrained(model_dir)
    return context_reach(config, for_config(config))


def _later_extension(ctx: StageContext) -> int:
    """The longest targetLength of a context-extend stage after this one (0 when none)."""
    stages = list(ctx.recipe.get("stages") or [])
    later = stages[ctx.index + 1:]
    return max((int(s.get("targetLength") or 0) for s in later
                if s.get("type") == "context-extend"), default=0)


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    path = Path(name).expanduser()
    try:
        if path.is_dir():
            return AutoTokenizer.from_pretrained(path)
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ExecutorError(
            f"source-config tokenizer {name!r} not found: neither a local directory holding a "
            f"tokenizer nor a hub id in the huggingface_hub cache ({type(e).__name__})"
        ) from e


def _refuse_other_modalities(modalities: Sequence[str]) -> None:
    other = sorted(set(modalities) - {"text"})
    if other:
        raise ExecutorError(
            f"source-config inputModalities {other}: this text model takes only text; "
            "another modality needs a `modality` stage, which this foundry refuses"
        )


def _replacement_tokenizer(name: str, rows: int) -> Any:
    """The tokenizer `name`, refused when it can emit an id the model has no embedding for."""
    tokenizer = _load_tokenizer(name)
    if len(tokenizer) > rows:
        raise ExecutorError(
            f"source-config tokenizer {name!r} has {len(tokenizer)} tokens; "
            f"the model embeds {rows}: ids past {rows - 1} would have no embedding"
        )
    return tokenizer


def _reached_later(ctx: StageContext, length: int, reach: int) -> str:
    """The note for a contextLength past the model's reach that a later context-extend stage
    reaches; refused when none does."""
    extension = _later_extension(ctx)
    if extension < length:
        longest = f" (the longest targets {extension})" if extension else ""
        raise ExecutorError(
            f"source-config contextLength {length} exceeds the model's context of {reach} "
            f"tokens and no later context-extend stage reaches it{longest}"
        )
    return (f"contextLength {length} exceeds the model's {reach} tokens; "
            f"a later context-extend stage reaches {extension}")


class SourceConfigExecutor:
    """`source-config`: context length, tokenizer and targets applied, every change recorded."""

    stage_type = "source-config"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        from transformers import AutoConfig, AutoTokenizer

        stage = parse_stage(SourceConfigStage, ctx.stage)
        quiet_transformers()
        _refuse_other_modalities(stage.input_modalities)
        changed: list[str] = []
        notes: list[str] = []
        config = AutoConfig.from_pretrained(ctx.input_dir)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(ctx.input_dir.iterdir()):
            if path.is_file():
                shutil.copy2(path, ctx.output_dir / path.name)
        tokenizer = None
        if stage.tokenizer:
            tokenizer = _replacement_tokenizer(stage.tokenizer, int(config.vocab_size))
            changed.append(f"tokenizer replaced by {stage.tokenizer} ({len(tokenizer)} tokens)")
        metrics: dict[str, Any] = {}
        if stage.context_length:
            reach = _reach(ctx.input_dir)
            metrics.update(contextLength=stage.context_length, modelContext=reach)
            if stage.context_length > reach:
                notes.append(_reached_later(ctx, stage.context_length, reach))
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(ctx.output_dir)
            before = getattr(tokenizer, "model_max_length", None)
            tokenizer.model_max_length = stage.context_length
            changed.append(f"tokenizer model_max_length {before} -> {stage.context_length}")
        if tokenizer is not None:
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                (ctx.output_dir / name).unlink(missing_ok=True)
            tokenizer.save_pretrained(ctx.output_dir)
        if stage.target_devices:
            metrics["targetDevices"] = list(stage.target_devices)
            notes.append(f"targetDevices recorded: {', '.join(stage.target_devices)}")
        if stage.target_batch_size:
            metrics["targetBatchSize"] = stage.target_batch_size
        if stage.input_modalities:
            metrics["inputModalities"] = list(stage.input_modalities)
        metrics["changed"] = changed
        if not changed:
            notes.append("nothing to change: the model was copied as it is")
        reporter.progress(1.0, f"{len(changed)} change(s)")
        return StageResult(output_dir=ctx.output_dir, metrics=metrics, notes=tuple(notes))
