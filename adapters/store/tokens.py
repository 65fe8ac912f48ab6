"""The API tokens: an application of their own (SQLite: `<store>.tokens.db`; PostgreSQL: the
`apitokens_events` table), so the HTTP server and `foundry tokens` in another process see the
same tokens, and a revocation takes effect on the server's next request.

A token reads `fdy_<token id, 32 hex>_<secret>`: the id finds the aggregate in one keyed read
(no scan, no index of hashes), the SHA-256 of the whole string must then match the recorded
hash. No token is cached: a revoked token is refused at once, by every server process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application

from foundry.adapters.clock import utc_now
from foundry.adapters.store.config import StoreConfig
from foundry.domain.api_token import SCOPES, ApiToken
from foundry.domain.errors import FoundryError, InvalidInputError

TOKEN_PATTERN = re.compile(r"^fdy_([0-9a-f]{32})_[A-Za-z0-9_-]{43}\Z")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")


class TokenNotFoundError(FoundryError, LookupError):
    """Raised when no token has the given id or name."""

    code = "not_found"

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no token has the id or name {ref!r}")


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiTokens(Application[UUID]):
    """Issue, verify, list and revoke API tokens."""

    name = "ApiTokens"

    @classmethod
    def open(cls, config: StoreConfig) -> ApiTokens:
        # No aggregate cache: a token revoked by another process must be refused at once.
        env = config.app_env("tokens")
        if config.kind == "postgres":
            # Every request reads its token first: with the library's 10 retries of a 10 s
            # connect, a lost store would hold each request for ~100 s before its 503.
            env["POSTGRES_CONNECT_TIMEOUT"] = "2"
        return cls(env=env)

    def issue(self, name: str, scope: str, *, issued_by: str) -> dict[str, Any]:
        """A new token; the secret is in the result and nowhere else, ever."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise InvalidInputError("name", "must be 1-64 of letters, digits and ._@- "
                                    "(starting with a letter or digit)")
        if scope not in SCOPES:
            raise InvalidInputError("scope", f"must be one of {', '.join(SCOPES)}, got {scope!r}")
        if any(t["name"] == name and not t["revoked"] for t in self.list_tokens()):
            raise InvalidInputError("name", f"an active token is already named {name!r}: "
                                    "revoke it first, or pick another name")
        token_id = uuid4()
        token = f"fdy_{token_id.hex}_{secrets.token_urlsafe(32)}"
        record = ApiToken.issue(id=token_id, name=name, scope=scope, token_hash=hash_token(token),
                          issued_by=issued_by, at=utc_now())
        self.save(record)
        return {**_describe(record), "token": token}

    def verify(self, token: str) -> ApiToken | None:
        """The active token `token` is, or None (unknown, malformed, wrong secret, revoked)."""
        match = TOKEN_PATTERN.match(token)
        if match is None:
            return None
        try:
            record: ApiToken = self.repository.get(UUID(match.group(1)))
        except AggregateNotFoundError:
            return None
        if not hmac.compare_digest(record.token_hash, hash_token(token)) or record.revoked:
            return None
        return record

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token ever issued, oldest first (never its secret or hash)."""
        ids: dict[UUID, None] = {}
        start = 1
        while True:
            page = self.recorder.select_notifications(start, 500)
            for n in page:
                ids[UUID(str(n.originator_id))] = None
            if len(page) < 500:
                break
            start = page[-1].id + 1
        return [_describe(self.repository.get(i)) for i in ids]

    def revoke(self, ref: str, *, by: str, reason: str = "") -> dict[str, Any]:
        """Revoke the token with id `ref`, or the active token named `ref`."""
        record = self._find(ref)
        record.revoke(by=by, reason=reason, at=utc_now())
        self.save(record)
        return _describe(record)

    def _find(self, ref: str) -> ApiToken:
        try:
            record: ApiToken = self.repository.get(UUID(ref))
        except (ValueError, AggregateNotFoundError):
            pass
        else:
            return record
        named = [t for t in self.list_tokens() if t["name"] == ref and not t["revoked"]]
        if not named:
            raise TokenNotFoundError(ref)
        found: ApiToken = self.repository.get(UUID(named[0]["id"]))
        return found


def _describe(record: ApiToken) -> dict[str, Any]:
    return {"id": str(record.id), "name": record.name, "scope": record.scope,
            "issuedBy": record.issued_by, "issuedAt": record.issued_at,
            "revoked": record.revoked, "revokedAt": record.revoked_at,
            "revokedBy": record.revoked_by}
