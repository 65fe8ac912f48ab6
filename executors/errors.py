"""Executor errors: a stage that cannot run, or stops. Context kept as attributes.

Each error keeps its constructor arguments in `args`-compatible form (see `__reduce__`), so it
survives pickling across a worker process boundary.
"""

from __future__ import annotations

from typing import Any

from foundry.domain.errors import FoundryError


class ExecutorError(FoundryError):
    """Root of the errors executors raise on purpose."""

    code = "executor_error"


class NoExecutorError(ExecutorError, LookupError):
    """Raised when no executor is registered for a stage type."""

    code = "no_executor"

    def __init__(self, stage_type: str, known: list[str]) -> None:
        self.stage_type, self.known = stage_type, list(known)
        super().__init__(
            f"no executor for stage type {stage_type!r}; this worker runs: "
            f"{', '.join(self.known) or 'nothing'}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stage_type, self.known))


class SourceNotFoundError(ExecutorError, LookupError):
    """Raised when the recipe's source model cannot be found; says where it looked."""

    code = "source_not_found"

    def __init__(self, base_model: str, looked_in: list[str]) -> None:
        self.base_model, self.looked_in = base_model, list(looked_in)
        where = "; ".join(self.looked_in) or "nowhere (no resolver knows this form)"
        super().__init__(f"source model {base_model!r} not found; looked in: {where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.base_model, self.looked_in))


class CorpusHashMismatchError(ExecutorError):
    """Raised when a corpus on disk does not hash to the hash the recipe pins."""

    code = "corpus_hash_mismatch"

    def __init__(self, expected: str, found: str) -> None:
        self.expected, self.found = expected, found
        super().__init__(
            f"corpus hash mismatch: the recipe pins {expected}, the files hash to {found}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.expected, self.found))


class StageCancelledError(ExecutorError):
    """Raised inside a stage when its run was cancelled; the stage stops without a result."""

    code = "stage_cancelled"

    def __init__(self, message: str = "stage cancelled") -> None:
        super().__init__(message)
