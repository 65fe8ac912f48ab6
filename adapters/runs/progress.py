"""The reporter handed to executors: throttled progress events, a heartbeat, cancellation.

Loss curves and heartbeats stay out of the event store: the store gets at most one
`StageProgressed` per interval per stage; a heartbeat file records liveness on every call;
a listener (the CLI's progress display) sees every call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

from foundry.adapters.store.forge_runs import ForgeRuns
from foundry.executors.errors import StageCancelledError


class RunReporter:
    """StageReporter implementation for one stage of one run."""

    def __init__(self, runs: ForgeRuns, run_id: UUID, cycle: int, index: int,
                 interval: float, heartbeat: Path, listener: Callable[[dict[str, Any]], None],
                 now: Callable[[], str]) -> None:
        self.runs, self.run_id, self.cycle, self.index = runs, run_id, cycle, index
        self.interval, self.heartbeat, self.listener, self.now = interval, heartbeat, listener, now
        self._last_recorded = float("-inf")
        beat(heartbeat, os.getpid())

    def progress(self, fraction: float, message: str = "",
                 metrics: Mapping[str, float] | None = None) -> None:
        beat(self.heartbeat, os.getpid())
        self.listener({"kind": "stage_progress", "cycle": self.cycle, "index": self.index,
                       "fraction": fraction, "message": message, "metrics": dict(metrics or {})})
        if time.monotonic() - self._last_recorded < self.interval:
            return
        self._last_recorded = time.monotonic()
        cancelled = self.runs.record(self.run_id, self._record(fraction, message))
        if cancelled:
            raise StageCancelledError(f"run {self.run_id} was cancelled")

    def _record(self, fraction: float, message: str) -> Callable[[Any], bool]:
        def step(run: Any) -> bool:
            if run.status == "cancelled":
                return True
            run.report_progress(cycle=self.cycle, index=self.index,
                                fraction=round(float(fraction), 4), message=message[:200],
                                at=self.now())
            return False

        return step


def beat(path: Path, pid: int) -> None:
    """Write the heartbeat atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{pid}.tmp")
    tmp.write_text(json.dumps({"pid": pid, "at": time.time()}))
    os.replace(tmp, path)


def read_beat(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
