"""The ApiToken aggregate: who may call the HTTP API, as events (issued, revoked).

The secret itself is never recorded: only its SHA-256 (a token is 32 random bytes, so a
plain hash cannot be reversed by guessing; no salt or slow hash is needed for that).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from foundry.domain.errors import FoundryError

Scope = Literal["read", "write", "run", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "run", "admin")
"""Ordered: each scope allows what the ones before it allow (a `run` token may also edit the
recipe it runs, which Continuum's forge/run shape needs; `admin` may do everything)."""


def allows(granted: str, needed: str) -> bool:
    """Whether a token of scope `granted` may call a command that needs `needed`."""
    order: tuple[str, ...] = SCOPES
    return order.index(granted) >= order.index(needed)


class TokenRevokedError(FoundryError):
    """Raised when a token that is already revoked is revoked again."""

    code = "invalid_input"

    def __init__(self, token_id: str) -> None:
        self.token_id = token_id
        super().__init__(f"token {token_id} is already revoked")


class ApiToken(Aggregate):
    """One API token: its name (the principal it acts as), scope and hash."""

    TOPIC = "foundry.ApiToken"

    class Created(Aggregate.Created):  # the library's default creation event; unused
        TOPIC = "foundry.ApiToken.Created"

    class Issued(Aggregate.Created):
        TOPIC = "foundry.ApiToken.Issued"
        name: str
        scope: str
        token_hash: str
        issued_by: str
        at: str

    class Revoked(Aggregate.Event):
        TOPIC = "foundry.ApiToken.Revoked"
        by: str
        reason: str
        at: str

    @event(Issued)
    def __init__(self, name: str, scope: str, token_hash: str, issued_by: str, at: str) -> None:
        self.name, self.scope, self.token_hash = name, scope, token_hash
        self.issued_by, self.issued_at = issued_by, at
        self.revoked_at: str | None = None
        self.revoked_by = ""

    @classmethod
    def issue(cls, *, id: UUID, name: str, scope: str, token_hash: str, issued_by: str,
              at: str) -> ApiToken:
        """A new token record with the given id (the id is part of the token's text)."""
        return cls._create(cls.Issued, id=id, name=name, scope=scope, token_hash=token_hash,
                           issued_by=issued_by, at=at)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self, *, by: str, reason: str, at: str) -> None:
        if self.revoked:
            raise TokenRevokedError(str(self.id))
        self._revoked(by=by, reason=reason, at=at)

    @event(Revoked)
    def _revoked(self, by: str, reason: str, at: str) -> None:
        self.revoked_at, self.revoked_by, self.revoke_reason = at, by, reason
