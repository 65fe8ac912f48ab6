"""Adapter errors: failures of the world around the domain."""

from __future__ import annotations

from foundry.domain.errors import FoundryError


class StoreUnavailableError(FoundryError):
    """Raised when the event store cannot be reached."""

    code = "store_unavailable"

    def __init__(self, where: str, cause: Exception) -> None:
        super().__init__(f"the store at {where} is unavailable: {cause}")


class InternalError(FoundryError):
    """Raised for a bug: an exception nobody expected. `ref` finds its traceback in the log."""

    code = "internal_error"

    def __init__(self, cause: Exception, *, ref: str = "") -> None:
        self.ref = ref
        where = f"; see the log entry command_crashed ref={ref}" if ref else ""
        super().__init__(f"internal error ({type(cause).__name__}){where}")


class CommandConflictError(FoundryError):
    """Raised when a commandId is reused with params other than its first command's."""

    code = "command_conflict"

    def __init__(self, command_id: str, first: str) -> None:
        self.command_id, self.first = command_id, first
        super().__init__(
            f"commandId: {command_id!r} was already used by {first} with different params; "
            "a retry must repeat the same params, a new command needs a new commandId")
