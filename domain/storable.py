"""What any store can hold: the one check every way in (data/*, alloy import) applies.

JSON parsers accept values no store can keep: NaN and Infinity, NUL characters (PostgreSQL's
jsonb refuses U+0000), lone surrogates (not encodable as UTF-8), integers beyond 64 bits,
nesting deep enough to exhaust a later recursive walk. Written once, such a value breaks every
later catch-up of the views, so it is refused before anything is written.
"""

from __future__ import annotations

import json
import math
from typing import Any

from foundry.domain.errors import InvalidInputError

# A recipe is a few KB; a megabyte is far beyond any honest payload and keeps a runaway
# client (or a crafted import) from filling the store.
MAX_PAYLOAD_BYTES = 1_048_576
# A recipe nests about 6 deep; filters a few more. Deeper is no honest payload, and a very
# deep one would exhaust Python's recursion in every later walk over it.
MAX_DEPTH = 64
# Both stores hold signed 64-bit integers; a bigger one cannot be stored or compared.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_scalar(value: Any, path: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInputError(path, "must be an integer between -2^63 and 2^63-1")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(path, f"must be a finite number (JSON has no {value})")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInputError(path, "must not contain NUL (U+0000) characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(path, "must be valid Unicode (a lone surrogate)") from None


def check_storable(root: Any, root_path: str = "") -> None:
    """Refuse NaN/Infinity, NUL, lone surrogates, integers beyond 64 bits and nesting beyond
    MAX_DEPTH, naming the first field at fault. Iterative: depth cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(root, root_path, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInputError(path or "params", f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for k, v in value.items():
                _check_scalar(k, path or "params")
                stack.append((v, f"{path}.{k}" if path else str(k), depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{path}.{i}", depth + 1) for i, v in enumerate(value))
        else:
            _check_scalar(value, path)


def check_size(value: Any, field: str, limit: int = MAX_PAYLOAD_BYTES) -> None:
    """Refuse a value whose JSON form exceeds `limit` bytes (one oversized string is enough)."""
    try:
        size = len(json.dumps(value, default=str))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(field, f"must be JSON-serialisable: {e}") from None
    if size > limit:
        raise InvalidInputError(field, f"payload is {size} bytes; the limit is {limit} bytes")
