"""`execute(command, params) -> envelope`: the one entry point for the API, CLI and HTTP.

Every outcome is an envelope `{success, timestamp, ...}`. Failures carry `error` (a
sentence naming the field and the rule), `errorCode`, and `errors` (every field at fault).
Nothing raises out of here: a caller on any transport gets the same structured answer.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from eventsourcing.persistence import InterfaceError, OperationalError

from foundry.adapters.errors import InternalError, StoreUnavailableError
from foundry.adapters.commands.data import HANDLERS
from foundry.domain.errors import FoundryError, InvalidInputError
from foundry.projections.query import QueryError

if TYPE_CHECKING:
    from foundry.adapters.bootstrap import Foundry

log = structlog.get_logger()

# A recipe is a few KB; a megabyte is far beyond any honest payload and keeps a runaway
# client from filling the store.
MAX_PAYLOAD_BYTES = 1_048_576

EXTRA_HANDLERS: dict[str, Any] = {}  # forge/* handlers register here (foundry.adapters.commands.forge)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def envelope(**fields: Any) -> dict[str, Any]:
    return {"success": True, **fields, "timestamp": now()}


def failure(error: Exception, **fields: Any) -> dict[str, Any]:
    code = getattr(error, "code", "internal_error")
    body: dict[str, Any] = {"success": False, "error": str(error), "errorCode": code}
    if isinstance(error, InvalidInputError):
        body["errors"] = error.details
    return {**body, **fields, "timestamp": now()}


def _check_storable(value: Any, path: str) -> None:
    """Refuse what JSON parsers accept but no store can hold: NaN/Infinity, NUL, lone
    surrogates. Written once, such a value breaks every later catch-up of the views."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(path, f"must be a finite number (JSON has no {value})")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInputError(path, "must not contain NUL (U+0000) characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(path, "must be valid Unicode (a lone surrogate)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_storable(k, path)
            _check_storable(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_storable(v, f"{path}.{i}")


def check_payload(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidInputError("params", f"must be a JSON object, got {type(params).__name__}")
    for key, value in params.items():
        _check_storable(value, str(key))
    try:
        size = len(json.dumps(params, default=str))
    except (TypeError, ValueError) as e:
        raise InvalidInputError("params", f"must be JSON-serialisable: {e}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidInputError(
            "params", f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes"
        )
    return params


def known_commands() -> list[str]:
    return sorted({*HANDLERS, *EXTRA_HANDLERS})


def dispatch(foundry: Foundry, command: str, params: Any) -> dict[str, Any]:
    """Route one command; map every failure to a structured envelope."""
    handler = HANDLERS.get(command) or EXTRA_HANDLERS.get(command)
    try:
        if handler is None:
            raise InvalidInputError(
                "command", f"unknown command {command!r}; known: {', '.join(known_commands())}"
            )
        result = handler(foundry, check_payload(params))
    except FoundryError as e:
        log.info("command_refused", command=command, code=e.code, error=str(e))
        return failure(e, **_found_false(e))
    except QueryError as e:  # a bad filter, orderBy or cursor: the caller's input
        err = InvalidInputError(e.field, e.rule)
        log.info("command_refused", command=command, code=err.code, error=str(err))
        return failure(err)
    except (OperationalError, InterfaceError) as e:
        log.error("store_unavailable", command=command, error=str(e))
        return failure(StoreUnavailableError(foundry.config.display_url, e))
    except Exception as e:
        log.exception("command_crashed", command=command)
        return failure(InternalError(e))
    return envelope(**result)


def _found_false(e: FoundryError) -> dict[str, Any]:
    return {"found": False} if isinstance(e, LookupError) else {}
