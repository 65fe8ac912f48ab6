"""What a request carries, read defensively: the body (refused past the limit before it is
parsed), its JSON, a run id in the path, a Last-Event-ID."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from starlette.requests import Request

from foundry.adapters.http.errors import PayloadTooLargeError
from foundry.domain.errors import InvalidInputError


def declared_too_big(request: Request, limit: int) -> PayloadTooLargeError | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return PayloadTooLargeError(limit)
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (a chunked body declares no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise InvalidInputError("body", f"is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            "body", f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise InvalidInputError("body", "JSON nested too deep to parse") from None
    except ValueError as e:  # an integer literal of more than 4,300 digits
        raise InvalidInputError("body", f"malformed JSON: {e}") from None


def path_run_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise InvalidInputError("runId", f"must be a UUID, got {raw[:80]!r}") from None


def last_event_id(request: Request, default: int | None = 0) -> Any:
    raw = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInputError("Last-Event-ID", f"must be a non-negative integer (the id of "
                                f"the last event received), got {raw[:40]!r}")
    return int(raw)
