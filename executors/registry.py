"""Which executor runs which stage type, which benchmarks eval knows, where models come from.

The orchestrator asks `unexecutable(...)` before starting a run, so a recipe with a stage this
worker cannot run is refused up front instead of failing halfway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from foundry.executors.base import StageExecutor
from foundry.executors.errors import ExecutorError, NoExecutorError, SourceNotFoundError

SourceResolver = Callable[[Mapping[str, Any]], Path]
"""Given the recipe's `source` in wire form, returns a local model directory."""

ArchitectureCheck = Callable[[str], str | None]
"""Given `source.architecture`, returns why this worker cannot forge it, or None if it can."""


def resolve_local_source(source: Mapping[str, Any]) -> Path:
    """The default resolver: `source.baseModel` is a path to an existing local directory."""
    base_model = str(source.get("baseModel", ""))
    if not base_model:
        raise SourceNotFoundError(base_model, [])
    path = Path(base_model).expanduser()
    if path.is_dir():
        return path.resolve()
    raise SourceNotFoundError(base_model, [f"local directory {path.resolve()}"])


@runtime_checkable
class TierProducer(Protocol):
    """A quant executor that can say, before a run, which quantTiers it cannot write, and
    which GGUF tiers (quant types) a quant stage of a recipe will write."""

    def unproducible_tiers(self, tiers: Any) -> list[str]: ...

    def produced_tiers(self, stage: Mapping[str, Any], recipe: Mapping[str, Any]
                       ) -> frozenset[str]: ...


def names_data_file(entry: Any) -> bool:
    """Whether a benchmark entry names a local `dataFile` (what a data-file benchmark needs
    to run here; whether the file is there is the eval stage's check, on its worker)."""
    data_file = entry.get("dataFile") if isinstance(entry, Mapping) else None
    return isinstance(data_file, str) and bool(data_file.strip())


class ExecutorRegistry:
    """Stage type -> executor, what eval understands, how to find the source model, the device."""

    def __init__(
        self,
        executors: Iterable[StageExecutor] = (),
        *,
        known_benchmarks: Iterable[str] = (),
        data_file_benchmarks: Iterable[str] = (),
        source_resolver: SourceResolver = resolve_local_source,
        device: str = "cpu",
        architecture_check: ArchitectureCheck | None = None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        self._executors: dict[str, StageExecutor] = {}
        self.known_benchmarks: frozenset[str] = frozenset(known_benchmarks)
        # benchmarks eval runs only on a local data file its entry names (`dataFile`)
        self.data_file_benchmarks: frozenset[str] = frozenset(data_file_benchmarks)
        self.source_resolver: SourceResolver = source_resolver
        self.device = device  # what StageContext.device is set to for this worker
        # None: any architecture (the fake executors do not look at the model)
        self.architecture_check = architecture_check
        # stage type -> why this worker refuses it up front (no executor, by design)
        self.refused: dict[str, str] = dict(refused or {})
        for executor in executors:
            self.register(executor)

    def register(self, executor: StageExecutor, *, replace: bool = False) -> None:
        """Register `executor` for its `stage_type`; a second one for a type needs `replace`."""
        stage_type = executor.stage_type
        if stage_type in self._executors and not replace:
            raise ValueError(f"an executor for stage type {stage_type!r} is already registered")
        self._executors[stage_type] = executor

    def get(self, stage_type: str) -> StageExecutor:
        try:
            return self._executors[stage_type]
        except KeyError:
            raise NoExecutorError(stage_type, sorted(self._executors)) from None

    def executable_types(self) -> frozenset[str]:
        return frozenset(self._executors)

    def unexecutable(self, stage_types: Iterable[str]) -> list[str]:
        """The stage types (sorted, unique) no executor here can run."""
        return sorted(set(stage_types) - self._executors.keys())

    def why_unexecutable(self, stage_type: str) -> str:
        """`stage_type`, with the reason it is refused when the registry gives one."""
        reason = self.refused.get(stage_type)
        return f"{stage_type} ({reason})" if reason else stage_type

    def architecture_problem(self, architecture: str) -> str | None:
        """Why `source.architecture` cannot be forged here, or None when it can."""
        if self.architecture_check is None:
            return None
        return self.architecture_check(architecture)

    def unproducible_tiers(self, tiers: Any) -> list[str]:
        """Each quantTiers format or variant no executor here can write, with the reason."""
        if not tiers:
            return []
        executor = self._executors.get("quant")
        if executor is None:
            return [f"{t.get('format')} {', '.join(map(str, t.get('variants') or []))} "
                    f"(no quant executor here)" for t in tiers]
        if isinstance(executor, TierProducer):
            return executor.unproducible_tiers(tiers)
        return []

    def produced_tiers(self, stage: Mapping[str, Any], recipe: Mapping[str, Any]
                       ) -> frozenset[str] | None:
        """The GGUF tiers (upper-case quant types) the quant `stage` of `recipe` will write;
        None when this worker's quant executor cannot say (or the stage is invalid: its own
        check names why when it runs)."""
        executor = self._executors.get("quant")
        if not isinstance(executor, TierProducer):
            return None
        try:
            return executor.produced_tiers(stage, recipe)
        except ExecutorError:
            return None
