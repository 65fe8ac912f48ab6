"""Adapter errors: failures of the world around the domain."""

from __future__ import annotations

from foundry.domain.errors import FoundryError


class StoreUnavailableError(FoundryError):
    """Raised when the event store cannot be reached."""

    code = "store_unavailable"

    def __init__(self, where: str, cause: Exception) -> None:
        super().__init__(f"the store at {where} is unavailable: {cause}")


class InternalError(FoundryError):
    """Raised for a bug: an exception nobody expected."""

    code = "internal_error"

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"internal error ({type(cause).__name__}): {cause}")
