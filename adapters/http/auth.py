"""Who asks, and what they may do: bearer tokens, scopes, the principal stamped into params,
and a per-token rate limit."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from foundry.adapters.http.errors import ForbiddenError, RateLimitedError, UnauthenticatedError
from foundry.domain.api_token import allows

if TYPE_CHECKING:
    from pydantic import BaseModel

    from foundry.adapters.commands.registry import CommandSpec
    from foundry.adapters.store.tokens import ApiTokens

# The registry's scope -> the token scope it needs. Publishing is part of forging (forge/*).
_SCOPE_OF = {"read": "read", "write": "write", "run": "run", "publish": "run"}
# Params that name files on the server's disk: reading or writing those is the operator's
# business, never a remote client's with a read token (artifact/card writes into `out`).
_SERVER_PATH_PARAMS = {
    "artifact/card": ("out",),
    "alloy/import": ("paths",),
    "alloy/export": ("out",),
    "artifact/verify": ("modelDir", "model_dir", "readme"),
}
# Params that say who did something: over HTTP they are the token's name, whatever was sent.
PRINCIPAL_FIELDS = ("author", "requested_by", "by")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a token's name and scope."""

    name: str
    scope: str
    token_id: str


def authenticate(authorization: str | None, tokens: ApiTokens) -> Principal:
    """The principal of an `Authorization: Bearer <token>` header; read from the store on
    every request, so a revocation made by any process applies to the next request."""
    if not authorization:
        raise UnauthenticatedError("Authorization: missing; send 'Bearer <token>' (create one "
                                   "with `foundry tokens create`)")
    kind, _, token = authorization.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("Authorization: must be 'Bearer <token>'")
    record = tokens.verify(token.strip())
    if record is None:
        raise UnauthenticatedError("Authorization: the token is unknown or revoked")
    return Principal(name=record.name, scope=record.scope, token_id=str(record.id))


def needed_scope(spec: CommandSpec[Any], params: Any) -> str:
    """The scope a command needs with these params."""
    paths = _SERVER_PATH_PARAMS.get(spec.name, ())
    if isinstance(params, dict):
        if any(params.get(p) for p in paths):
            return "admin"
        if spec.name == "artifact/verify" and not _is_uuid(params.get("subject")):
            return "admin"  # a file on the server's disk, not an artifact or run id
    return _SCOPE_OF.get(spec.scope, "admin")


def authorize(principal: Principal, command: str, needed: str) -> None:
    if not allows(principal.scope, needed):
        raise ForbiddenError(command, needed, principal.scope)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def stamp_principal(model: type[BaseModel], params: Any, principal: str) -> Any:
    """`params` with every who-did-it field set to `principal`, under the wire (camelCase)
    name, and any other spelling of it removed, so no spelling of it can win over it."""
    if not isinstance(params, dict):
        return params  # the bus refuses it, naming the rule
    stamped = dict(params)
    for name in PRINCIPAL_FIELDS:
        field = model.model_fields.get(name)
        if field is None:
            continue
        alias = field.alias or name
        stamped.pop(name, None)
        stamped.pop(alias, None)
        stamped[alias] = principal
    return stamped


class RateLimiter:
    """A token bucket per token: `rate` requests a second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one request of `key`'s bucket, or raise RateLimitedError."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                raise RateLimitedError((1 - tokens) / self.rate)
            self._buckets[key] = (tokens - 1, now)
