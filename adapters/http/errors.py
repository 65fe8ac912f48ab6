"""Failures only HTTP has (no token, too big, too fast), and the HTTP status of every
errorCode the bus and these can answer with."""

from __future__ import annotations

from foundry.domain.errors import FoundryError


class UnauthenticatedError(FoundryError):
    """Raised when a request carries no token, or one that is unknown or revoked."""

    code = "unauthenticated"


class ForbiddenError(FoundryError):
    """Raised when the token's scope does not allow the command."""

    code = "forbidden"

    def __init__(self, command: str, needed: str, granted: str) -> None:
        self.command, self.needed, self.granted = command, needed, granted
        super().__init__(f"{command} needs scope {needed!r}; this token has {granted!r}")


class PayloadTooLargeError(FoundryError):
    """Raised when a request body is over the limit; it is refused before it is parsed."""

    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body: over the limit of {limit} bytes")


class RateLimitedError(FoundryError):
    """Raised when a token sends requests faster than the server's per-token rate."""

    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many requests for this token: retry in {retry_after:.2f}s")


class UnknownCommandError(FoundryError, LookupError):
    """Raised when the path names no registered command."""

    code = "not_found"

    def __init__(self, command: str, known: list[str]) -> None:
        self.command = command
        super().__init__(f"command: unknown command {command!r}; known: {', '.join(known)}")


# Every code a FoundryError subclass carries (tests/e2e/test_http_status.py checks that no
# code is missing). The caller's mistakes are 4xx, the server's or the world's 5xx.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_input": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "read_refused": 403,  # a recipe names a local path outside the roots a run may read
    "not_found": 404,
    "revision_conflict": 409,
    "version_pinned": 409,
    "archived": 409,
    "already_exists": 409,
    "name_taken": 409,  # another live recipe holds the name
    "illegal_transition": 409,
    "run_ended": 409,
    "command_conflict": 409,
    "payload_too_large": 413,
    # A recipe that names what this server cannot execute: well-formed, not processable.
    "no_executor": 422,
    "unsupported_architecture": 422,
    "source_not_found": 422,
    "corpus_not_found": 422,
    "corpus_hash_mismatch": 422,
    "rate_limited": 429,
    "foundry_error": 500,
    "internal_error": 500,
    "executor_error": 500,
    # The server's own stored files are missing or damaged: its fault, not the caller's.
    "blob_error": 500,
    "blob_missing": 500,
    "blob_corrupt": 500,
    "event_damaged": 500,
    "stage_cancelled": 409,
    "publish_failed": 502,
    "store_unavailable": 503,
    "views_behind": 503,
}


def status_for(code: str) -> int:
    """The HTTP status of an errorCode; an unknown code is the server's fault (500)."""
    return STATUS_BY_CODE.get(code, 500)
