"""`dispatch(command, params) -> envelope`: the one entry point for the API, CLI and HTTP.

Every outcome is an envelope `{success, timestamp, ...}`. Failures carry `error` (a
sentence naming the field and the rule), `errorCode`, and `errors` (every field at fault).
Nothing raises out of here: a caller on any transport gets the same structured answer.

The params are checked once, here: storable values (no NaN, NUL, lone surrogates, integers
beyond 64 bits, nesting beyond MAX_DEPTH), then the command's params model; the handler is
handed the validated model and never looks at the raw dict.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from eventsourcing.persistence import InterfaceError, OperationalError

from foundry.adapters.commands.validation import validate_model
from foundry.adapters.errors import InternalError, StoreUnavailableError
from foundry.domain.errors import FoundryError, InvalidInputError
from foundry.domain.storable import check_size, check_storable
from foundry.projections.query import QueryError

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices
    from foundry.adapters.commands.registry import CommandRegistry

log = structlog.get_logger()

def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def envelope(**fields: Any) -> dict[str, Any]:
    return {"success": True, **fields, "timestamp": now()}


def failure(error: Exception, **fields: Any) -> dict[str, Any]:
    code = getattr(error, "code", "internal_error")
    body: dict[str, Any] = {"success": False, "error": str(error), "errorCode": code}
    if isinstance(error, InvalidInputError):
        body["errors"] = error.details
    # What a partly refused command still reports (alloy/import: the per-file report).
    body.update(getattr(error, "envelope_fields", None) or {})
    return {**body, **fields, "timestamp": now()}


def check_payload(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidInputError("params", f"must be a JSON object, got {type(params).__name__}")
    check_storable(params)
    check_size(params, "params")
    return params


def dispatch(registry: CommandRegistry, services: CommandServices, command: str, params: Any,
             call: Call) -> dict[str, Any]:
    """Route one command; map every failure to a structured envelope."""
    try:
        spec = registry.get(command)
        typed = validate_model(spec.params, check_payload(params))
        result = spec.run(typed, services, call)
    except FoundryError as e:
        log.info("command_refused", command=command, code=e.code, error=str(e))
        return failure(e, **_found_false(e))
    except QueryError as e:  # a bad filter, orderBy or cursor: the caller's input
        err = InvalidInputError(e.field, e.rule)
        log.info("command_refused", command=command, code=err.code, error=str(err))
        return failure(err)
    except Exception as e:
        return failure(classify(e, command, services))
    return envelope(**result)


def classify(error: Exception, command: str, services: Any) -> FoundryError:
    """An unexpected exception as the error the caller should see: the store being
    unreachable is `store_unavailable`; anything else is a bug, `internal_error`, logged with
    its traceback under a reference the message gives (the message itself stays short: an
    exception's text may hold data the caller should not see)."""
    if is_unavailable(error):
        log.error("store_unavailable", command=command, error=str(error))
        where = getattr(getattr(services, "config", None), "display_url", "the store")
        return StoreUnavailableError(where, error)
    ref = uuid.uuid4().hex[:12]
    log.error("command_crashed", command=command, ref=ref, exc_info=error)
    return InternalError(error, ref=ref)


# SQLite reports a busy, missing, unreadable or full database with these OperationalError
# texts; every other OperationalError (no such function, a syntax error) is a bug.
_SQLITE_UNAVAILABLE = ("unable to open", "database is locked", "disk i/o error",
                       "readonly database", "database or disk is full", "not a database")


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the store cannot be reached or used, not that a statement was
    wrong: a refused connection, a dropped socket, a locked or unreadable SQLite file."""
    if isinstance(error, InterfaceError | ConnectionError | TimeoutError):
        return True
    cause = error.__cause__ or error.__context__
    if isinstance(error, sqlite3.OperationalError) or isinstance(cause, sqlite3.OperationalError):
        text = str(cause if isinstance(cause, sqlite3.OperationalError) else error).lower()
        return any(marker in text for marker in _SQLITE_UNAVAILABLE)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return isinstance(error, OperationalError)
    for candidate in (error, cause):
        # psycopg's own OperationalError (not its subclasses such as a query cancelled) is a
        # failed or lost connection; so are the server's connection_exception states (08xxx),
        # admin shutdown (57P01-57P03) and too many connections (53300).
        if type(candidate) is psycopg.OperationalError or type(candidate).__name__ == "PoolTimeout":
            return True
        state = getattr(getattr(candidate, "diag", None), "sqlstate", None) or ""
        if state.startswith("08") or state in ("57P01", "57P02", "57P03", "53300"):
            return True
    return isinstance(error, OperationalError) and cause is None


def _found_false(e: FoundryError) -> dict[str, Any]:
    return {"found": False} if isinstance(e, LookupError) else {}
