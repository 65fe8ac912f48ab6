"""Content hashes: SHA-256 over RFC 8785 (JCS) canonical JSON, written `sha256:<hex>`.

`rfc8785` is a pure function library (no I/O), maintained by Trail of Bits; it is the one
non-stdlib import the domain allows itself besides pydantic, because hashing is a domain rule.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON-native value."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """`sha256:` + hex digest of the canonical JSON of `value`."""
    return sha256_hex(canonical_json(value))
