"""Compile Mongo-style list queries for read models into SQL (SQLite JSON1 or PostgreSQL jsonb).

A read model stores each entity as one row: a few promoted, indexed columns plus one JSON
document (camelCase). Filtering, ordering and keyset paging all run in the database.

Filter grammar: ``{field: value}`` (``$eq``) or ``{field: {op: value, ...}}`` (ANDed) with op in
:data:`OPERATORS`; top-level ``$and`` / ``$or`` take non-empty lists of filters. A field is a
dotted camelCase path (``source.baseModel``, ``tags.0``); a path listed in ``TableSpec.columns``
uses its column, any other reads the document. Semantics, identical on both dialects:

* JSON values are typed: ``1`` never equals ``"1"`` or ``true``; ``$gt``/``$gte``/``$lt``/``$lte``
  take a number or string and match only values of that type. Strings compare by code point.
* ``{"f": None}`` matches JSON null *or* a missing path (SQL NULL for a column); ``$ne`` and
  ``$nin`` match everything ``$eq``/``$in`` do not, nulls and missing paths included.
* ``$contains``: an array holding an equal element, or (string argument) a string containing it
  as a substring. On a promoted column only for kind "text" (substring).
* ``$regex``: "matches somewhere" on strings, in the subset ``query_regex`` documents (the same
  answer on both dialects); a pattern outside it is a QueryError naming the field. SQLite has no
  REGEXP built in: the views register :func:`sqlite_regexp` on every connection.
* At most ``MAX_PARAMS`` bound values per query (PostgreSQL stops at 65,535, SQLite at 32,766):
  a bigger filter is the caller's error, not the store's.

Ordering: at most 4 ``{field, direction}`` entries; the key column is appended as the final
tie-breaker (in the direction of the last entry). NULL (and a missing JSON path) is the smallest
value: ``NULLS FIRST`` ascending, ``NULLS LAST`` descending, on both dialects. JSON paths sort by
type rank first (null < numbers < strings < false < true < arrays/objects), see ``query_sql``.
For the same order on both dialects, declare promoted PostgreSQL text columns ``COLLATE "C"``;
to let PostgreSQL use an index for the ordering, create it as ``(col NULLS FIRST, key)``.
Promoted "timestamp" columns are ``timestamptz`` on PostgreSQL and ISO-8601 text in one uniform
format (e.g. ``2024-01-02T03:04:05+00:00``) on SQLite, where they compare as text.

Paging is keyset paging: :func:`compile_list` emits ``LIMIT limit + 1``; the caller shows
``limit`` rows and, when the extra row came back, builds the next cursor from the last row shown
with :func:`make_cursor` (its sort values, i.e. the values of ``order[:-1]`` paths, and its key).
Nullable sort fields are fully supported: the seek condition treats NULL as the smallest value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from foundry.projections.query_regex import RegexSubsetError, sqlite_regexp
from foundry.projections.query_regex import parse as parse_regex
from foundry.projections.query_sql import (
    Column,
    Dialect,
    Frag,
    JsonPath,
    Target,
    all_of,
    any_of,
    not_true,
)

__all__ = [
    "OPERATORS",
    "CompiledQuery",
    "Dialect",
    "QueryError",
    "TableSpec",
    "compile_count",
    "compile_list",
    "make_cursor",
    "sqlite_regexp",
]

OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$contains", "$regex")
_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
KINDS = frozenset({"text", "int", "real", "bool", "timestamp"})
MAX_LIMIT, MAX_ORDER, MAX_IN, MAX_DEPTH = 500, 4, 500, 8
MAX_PARAMS = 5_000
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


@dataclass(frozen=True)
class TableSpec:
    table: str
    doc_column: str
    columns: Mapping[str, tuple[str, str]]
    key_column: str
    base_where: str = ""  # fixed SQL without placeholders; a literal % is escaped for psycopg


class QueryError(ValueError):
    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    params: list[Any]
    order: list[tuple[str, str]]


def compile_list(
    spec: TableSpec,
    dialect: Dialect,
    *,
    filter: Mapping[str, Any] | None,
    order_by: Sequence[Mapping[str, Any]] | None,
    limit: int,
    cursor: str | None,
    select: str,
) -> CompiledQuery:
    """One page of ``SELECT {select} FROM table`` (``select`` is trusted SQL, e.g. ``"id, doc"``).

    The SQL ends in ``LIMIT limit + 1``: when ``limit + 1`` rows come back there is a next page;
    show the first ``limit`` and pass the sort values and key of row ``limit - 1`` (with
    ``.order``) to :func:`make_cursor`. A ``cursor`` adds the seek condition "after that row".
    Raises :class:`QueryError` for any invalid argument.
    """
    _check_dialect(dialect)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    keys = _order(spec, dialect, order_by)
    order = [(path, "desc" if desc else "asc") for path, desc, _ in keys]
    where = _where(spec, dialect, filter)
    if cursor is not None:
        values = _decode_cursor(cursor, order, keys)
        # lexicographic "after": OR over i of (keys before i equal AND key i after)
        seek = [
            all_of([t.same(v) for (_, _, t), v in zip(keys[:i], values, strict=False)]
                   + [target.after(values[i], desc)])
            for i, (_, desc, target) in enumerate(keys)
        ]
        where.append(any_of(seek))
    terms = ", ".join(term for _, desc, target in keys for term in target.order(desc))
    sql, params = _select(spec, dialect, select, where)
    _check_params(params)
    ph = "?" if dialect == "sqlite" else "%s"
    return CompiledQuery(f"{sql} ORDER BY {terms} LIMIT {ph}", [*params, limit + 1], order)


def compile_count(
    spec: TableSpec,
    dialect: Dialect,
    *,
    filter: Mapping[str, Any] | None,
) -> CompiledQuery:
    """``SELECT COUNT(*)`` of the rows matching ``filter`` (and ``base_where``)."""
    _check_dialect(dialect)
    sql, params = _select(spec, dialect, "COUNT(*)", _where(spec, dialect, filter))
    _check_params(params)
    return CompiledQuery(sql, params, [])


def _check_params(params: Sequence[Any]) -> None:
    if len(params) > MAX_PARAMS:
        raise QueryError("filter", f"needs {len(params)} bound values; at most {MAX_PARAMS} "
                         "(split the query, or use fewer $in values and conditions)")


def make_cursor(row_sort_values: Sequence[Any], key: Any, order: Sequence[tuple[str, str]]) -> str:
    """Opaque cursor for "after this row": its values for ``order[:-1]`` and its key.

    ``order`` is ``CompiledQuery.order``; its fingerprint is stored so that the cursor is refused
    with another orderBy. datetimes/dates become ISO strings, UUIDs strings, Decimals numbers.
    """
    order = [(str(path), str(direction)) for path, direction in order]
    if len(row_sort_values) != len(order) - 1:
        raise ValueError(f"expected {len(order) - 1} sort values, got {len(row_sort_values)}")
    payload = {
        "o": _fingerprint(order),
        "v": [_cursor_value(v) for v in row_sort_values],
        "k": _cursor_value(key),
    }
    raw = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# -- internals ---------------------------------------------------------------------------------


def _check_dialect(dialect: str) -> None:
    if dialect not in ("sqlite", "postgres"):
        raise QueryError("dialect", "must be 'sqlite' or 'postgres'")


def _select(spec: TableSpec, dialect: Dialect, select: str, where: list[Frag]) -> Frag:
    base = spec.base_where if dialect == "sqlite" else spec.base_where.replace("%", "%%")
    frags: list[Frag] = ([(base, [])] if base.strip() else []) + where
    sql = f"SELECT {select} FROM {spec.table}"
    if not frags:
        return sql, []
    cond, params = all_of(frags) if len(frags) > 1 else (f"({frags[0][0]})", frags[0][1])
    return f"{sql} WHERE {cond}", params


def _columns(spec: TableSpec) -> dict[str, tuple[str, str]]:
    cols = dict(spec.columns)
    for path, (_, kind) in cols.items():
        if kind not in KINDS:
            raise ValueError(f"TableSpec column {path!r}: unknown kind {kind!r}")
    if all(column != spec.key_column for column, _ in cols.values()):
        cols[spec.key_column] = (spec.key_column, "any")
    return cols


def _target(spec: TableSpec, dialect: Dialect, path: Any) -> tuple[Target, str]:
    """The SQL target of a field path, and its kind ("json" for document paths)."""
    if not isinstance(path, str):
        raise QueryError(str(path), "field paths must be strings")
    cols = _columns(spec)
    if path in cols:
        column, kind = cols[path]
        return Column(dialect, column, kind), kind
    segments = path.split(".")
    if not all(_SEGMENT.fullmatch(s) for s in segments) or segments[0].isdigit():
        raise QueryError(path, "invalid field path: dot-separated identifiers or array indexes")
    return JsonPath(dialect, f"{spec.table}.{spec.doc_column}", tuple(segments)), "json"


def _scalar(field: str, kind: str, v: Any, *, null: bool = True) -> Any:
    """Validate a value for a field of ``kind``; returns it unchanged."""
    if v is None:
        if null:
            return v
        raise QueryError(field, "value must not be null")
    ok = {
        "text": isinstance(v, str),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "real": isinstance(v, int | float) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
        "timestamp": isinstance(v, str) and _is_timestamp(v),
    }.get(kind, isinstance(v, str | int | float))  # json / any: every JSON scalar
    if not ok or (isinstance(v, float) and not math.isfinite(v)):
        want = "a JSON scalar" if kind in ("json", "any") else f"a {kind} value"
        raise QueryError(field, f"value must be {want}, got {v!r}")
    return v


def _is_timestamp(v: str) -> bool:
    try:
        dt.datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def _where(spec: TableSpec, dialect: Dialect, flt: Mapping[str, Any] | None) -> list[Frag]:
    if flt is None or (isinstance(flt, Mapping) and not flt):
        return []
    return [_filter(spec, dialect, flt, 0)]


def _filter(spec: TableSpec, dialect: Dialect, flt: Any, depth: int) -> Frag:
    if not isinstance(flt, Mapping):
        raise QueryError("filter", "a filter must be an object")
    if depth > MAX_DEPTH:
        raise QueryError("filter", f"nested deeper than {MAX_DEPTH} levels")
    frags: list[Frag] = []
    for field, value in flt.items():
        if field in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise QueryError(field, "must be a non-empty list of filters")
            subs = [_filter(spec, dialect, sub, depth + 1) for sub in value]
            frags.append(all_of(subs) if field == "$and" else any_of(subs))
        elif isinstance(field, str) and field.startswith("$"):
            raise QueryError(field, "unknown top-level operator; allowed: $and, $or")
        else:
            target, kind = _target(spec, dialect, field)
            ops = value if isinstance(value, Mapping) else {"$eq": value}
            if not ops:
                raise QueryError(field, "an operator object needs at least one operator")
            frags.extend(_condition(field, target, kind, op, arg) for op, arg in ops.items())
    return all_of(frags) if frags else ("1 = 1", [])


def _condition(field: str, target: Target, kind: str, op: Any, arg: Any) -> Frag:
    if op in ("$eq", "$ne"):
        frag = target.eq(_scalar(field, kind, arg))
        return not_true(frag) if op == "$ne" else frag
    if op in ("$in", "$nin"):
        if not isinstance(arg, list) or not arg or len(arg) > MAX_IN:
            raise QueryError(field, f"{op} needs a non-empty list of at most {MAX_IN} values")
        frag = target.is_in([_scalar(field, kind, a) for a in arg])
        return not_true(frag) if op == "$nin" else frag
    if op in _RANGE:
        if kind == "bool" or isinstance(arg, bool) or (kind == "json" and arg is None):
            raise QueryError(field, f"{op} needs a number or string")
        return target.cmp(_RANGE[op], _scalar(field, kind, arg, null=False))
    if op == "$contains":
        if kind not in ("json", "text", "any"):
            raise QueryError(field, "$contains needs an array or text field")
        value = _scalar(field, "json" if kind == "json" else "text", arg, null=False)
        return target.contains(value)
    if op == "$regex":
        if kind not in ("json", "text", "any") or not isinstance(arg, str):
            raise QueryError(field, "$regex needs a string pattern and a text field")
        try:
            pattern = parse_regex(arg)
        except RegexSubsetError as exc:
            raise QueryError(field, f"$regex outside the supported subset: {exc} "
                             "(see projections/query_regex.py)") from None
        return target.regex(pattern.python if target.dialect == "sqlite" else pattern.postgres)
    raise QueryError(field, f"unknown operator {op!r}; allowed: {', '.join(OPERATORS)}")


def _order(
    spec: TableSpec, dialect: Dialect, order_by: Sequence[Mapping[str, Any]] | None
) -> list[tuple[str, bool, Target]]:
    entries = order_by or []
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Sequence):
        raise QueryError("orderBy", "must be a list of {field, direction}")
    if len(entries) > MAX_ORDER:
        raise QueryError("orderBy", f"at most {MAX_ORDER} entries")
    cols = _columns(spec)
    key_path = next(p for p, (c, _) in cols.items() if c == spec.key_column)
    keys: list[tuple[str, bool, Target]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or set(entry) - {"field", "direction"}:
            raise QueryError(f"orderBy[{i}]", "must be an object {field, direction}")
        path, direction = entry.get("field"), entry.get("direction") or "asc"
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise QueryError(f"orderBy[{i}].direction", "must be asc or desc")
        if not isinstance(path, str):
            raise QueryError(f"orderBy[{i}].field", "must be a field path")
        target, _ = _target(spec, dialect, path)
        if any(path == p for p, _, _ in keys):
            raise QueryError(str(path), "appears twice in orderBy")
        if path == key_path and i != len(entries) - 1:
            raise QueryError(key_path, "the key may only be the last orderBy entry")
        keys.append((path, direction.lower() == "desc", target))
    if not keys or keys[-1][0] != key_path:
        desc = keys[-1][1] if keys else False
        keys.append((key_path, desc, Column(dialect, spec.key_column, cols[key_path][1])))
    return keys


def _fingerprint(order: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps([list(o) for o in order]).encode()).hexdigest()[:16]


def _cursor_value(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, list | tuple | Mapping):
        return [] if isinstance(v, list | tuple) else {}  # only the type ranks (they all tie)
    if v is None or isinstance(v, str | int | float):
        return v
    raise TypeError(f"cannot put {type(v).__name__} into a cursor")


def _decode_cursor(
    cursor: Any, order: list[tuple[str, str]], keys: list[tuple[str, bool, Target]]
) -> list[Any]:
    """The cursor's sort values followed by its key, validated against the sort targets."""
    try:
        if not isinstance(cursor, str) or len(cursor) > 8192:
            raise ValueError("not a string")
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
        if not isinstance(data, dict) or set(data) != {"o", "v", "k"}:
            raise ValueError("bad shape")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise QueryError("cursor", "malformed cursor") from None
    if data["o"] != _fingerprint(order):
        raise QueryError("cursor", "the cursor was made for a different orderBy")
    values = data["v"]
    if not isinstance(values, list) or len(values) != len(keys) - 1:
        raise QueryError("cursor", "malformed cursor")
    values = [*values, data["k"]]
    for i, (v, (_, _, target)) in enumerate(zip(values, keys, strict=True)):
        if isinstance(target, JsonPath) and v in ([], {}):
            continue
        try:
            kind = target.kind if isinstance(target, Column) else "json"
            _scalar("cursor", kind, v, null=i < len(keys) - 1)
        except QueryError:
            raise QueryError("cursor", "malformed cursor") from None
    return values
