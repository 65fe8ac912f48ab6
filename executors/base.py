"""The executor contract: stage runners report, the run application records.

An executor never touches the event store. It receives a `StageContext` (what to run, on which
input model directory, where to write) and a `StageReporter` (where to send progress), does the
work, and returns a `StageResult`. The run application turns the result into
`ForgeRun.StageCompleted` and saves it; a raised exception becomes `ForgeRun.StageFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class StageContext:
    """Everything a stage may read. Paths are local directories prepared by the orchestrator."""

    run_id: str
    cycle: int  # 1-based
    index: int  # 0-based position in recipe.stages
    stage: Mapping[str, Any]  # the stage config in wire form (camelCase), includes "type"
    recipe: Mapping[str, Any]  # the pinned recipe snapshot in wire form
    input_dir: Path  # the model as the previous stage left it (HF save_pretrained layout)
    output_dir: Path  # empty directory: write the model after this stage here
    work_dir: Path  # scratch space, deleted after the stage
    base_model_dir: Path  # the resolved source model, untouched (eval compares against it)
    seed: int = 0
    device: str = "cpu"
    extras: Mapping[str, Any] = field(default_factory=dict)  # e.g. resolved corpus paths


@runtime_checkable
class StageReporter(Protocol):
    """Progress sink given to executors. Implementations throttle what reaches the store."""

    def progress(
        self, fraction: float, message: str = "", metrics: Mapping[str, float] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class StageResult:
    """What a stage produced.

    `output_dir` holds the model for the next stage. `files` are extra outputs (loss curves,
    GGUF tiers, samples), stored content-addressed next to the model files. `metrics` are
    JSON-native numbers and strings. `notes` are plain facts worth recording
    (e.g. "precision bf16 unavailable on cpu: ran fp32").
    """

    output_dir: Path
    files: tuple[Path, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class StageExecutor(Protocol):
    """Runs one stage type."""

    stage_type: str

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult: ...
