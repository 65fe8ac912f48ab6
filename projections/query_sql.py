"""SQL fragments for :mod:`foundry.projections.query`, for SQLite (JSON1) and PostgreSQL (jsonb).

A filter or sort field is either a promoted :class:`Column` or a :class:`JsonPath` into the
document column. Each renders itself for one dialect and returns ``(sql, params)`` fragments with
``?`` (SQLite) or ``%s`` (psycopg) placeholders. Only identifiers from the ``TableSpec`` and
validated path segments ever reach the SQL text; every value travels as a parameter.

JSON values are typed: a number only equals or compares with numbers, a string with strings, a
boolean only equals a boolean. Sorting ranks JSON values as
null/missing < numbers < strings < false < true < arrays/objects (arrays and objects tie with
each other), numbers numerically, strings by code point (``COLLATE "C"`` on PostgreSQL, BINARY
on SQLite), so both dialects give the same order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Dialect = Literal["sqlite", "postgres"]
Frag = tuple[str, list[Any]]

FALSE: Frag = ("1 = 0", [])
PG_CASTS = {
    "text": "::text",
    "int": "::bigint",
    "real": "::double precision",
    "bool": "::boolean",
    "timestamp": "::timestamptz",
    "any": "",
}
NUM_RANK, STR_RANK = 1, 2


def json_rank(value: Any) -> int:
    """Sort rank of a JSON value; the SQL ``rank`` expressions compute the same number."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 4 if value else 3
    if isinstance(value, int | float):
        return NUM_RANK
    if isinstance(value, str):
        return STR_RANK
    return 5


def all_of(frags: Sequence[Frag]) -> Frag:
    if len(frags) == 1:
        return frags[0]
    return " AND ".join(f"({s})" for s, _ in frags), [p for _, ps in frags for p in ps]


def any_of(frags: Sequence[Frag]) -> Frag:
    if len(frags) == 1:
        return frags[0]
    return " OR ".join(f"({s})" for s, _ in frags), [p for _, ps in frags for p in ps]


def not_true(frag: Frag) -> Frag:
    """Negation where an unknown (NULL) outcome counts as "not matched", so it is negated too."""
    return f"({frag[0]}) IS NOT TRUE", frag[1]


def _dir(desc: bool) -> str:
    return "DESC" if desc else "ASC"


@dataclass(frozen=True)
class Column:
    """A promoted column; ``kind`` is text/int/real/bool/timestamp, or "any" for an untyped key."""

    dialect: Dialect
    name: str
    kind: str

    @property
    def ph(self) -> str:
        return "?" if self.dialect == "sqlite" else "%s" + PG_CASTS[self.kind]

    def eq(self, v: Any) -> Frag:
        return (f"{self.name} IS NULL", []) if v is None else (f"{self.name} = {self.ph}", [v])

    def is_in(self, values: Sequence[Any]) -> Frag:
        present = [v for v in values if v is not None]
        frags: list[Frag] = []
        if present:
            frags.append((f"{self.name} IN ({', '.join([self.ph] * len(present))})", present))
        if len(present) < len(values):
            frags.append(self.eq(None))
        return any_of(frags)

    def cmp(self, op: str, v: Any) -> Frag:
        return f"{self.name} {op} {self.ph}", [v]

    def contains(self, v: str) -> Frag:
        fn = "instr" if self.dialect == "sqlite" else "strpos"
        return f"{fn}({self.name}, {self.ph}) > 0", [v]

    def regex(self, pattern: str) -> Frag:
        op = "REGEXP" if self.dialect == "sqlite" else "~"
        return f"{self.name} {op} {self.ph}", [pattern]

    def order(self, desc: bool) -> list[str]:
        # NULL sorts as the smallest value: SQLite's default, spelled out for PostgreSQL.
        nulls = "" if self.dialect == "sqlite" else (" NULLS LAST" if desc else " NULLS FIRST")
        return [f"{self.name} {_dir(desc)}{nulls}"]

    def after(self, v: Any, desc: bool) -> Frag:
        """Rows strictly after a row whose value is ``v`` in this column's sort direction."""
        if v is None:
            return FALSE if desc else (f"{self.name} IS NOT NULL", [])
        if desc:
            return f"{self.name} < {self.ph} OR {self.name} IS NULL", [v]
        return self.cmp(">", v)

    def same(self, v: Any) -> Frag:
        return self.eq(v)


@dataclass(frozen=True)
class JsonPath:
    """A path into the JSON document column (``doc`` is table-qualified, so that it resolves to
    the outer row inside ``json_each``); segments are identifiers or array indexes."""

    dialect: Dialect
    doc: str
    segments: tuple[str, ...]

    @property
    def _sl_path(self) -> str:
        return "'$" + "".join(f"[{s}]" if s.isdigit() else f".{s}" for s in self.segments) + "'"

    @property
    def _pg_path(self) -> str:
        # quoted elements: an unquoted NULL in an array literal would be an SQL NULL
        return "'{" + ",".join(f'"{s}"' for s in self.segments) + "}'"

    @property
    def _sl_type(self) -> str:
        return f"json_type({self.doc}, {self._sl_path})"

    @property
    def _sl_value(self) -> str:
        return f"json_extract({self.doc}, {self._sl_path})"

    @property
    def _jsonb(self) -> str:
        return f"({self.doc} #> {self._pg_path})"

    @property
    def _pg_text(self) -> str:
        return f"({self.doc} #>> {self._pg_path})"

    @property
    def rank(self) -> str:
        if self.dialect == "sqlite":
            return (
                f"(CASE {self._sl_type} WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2"
                " WHEN 'false' THEN 3 WHEN 'true' THEN 4 WHEN 'array' THEN 5 WHEN 'object' THEN 5"
                " ELSE 0 END)"
            )
        return (
            f"(CASE jsonb_typeof({self._jsonb}) WHEN 'number' THEN 1 WHEN 'string' THEN 2"
            f" WHEN 'boolean' THEN (CASE WHEN {self._jsonb} = 'true'::jsonb THEN 4 ELSE 3 END)"
            " WHEN 'array' THEN 5 WHEN 'object' THEN 5 ELSE 0 END)"
        )

    @property
    def num(self) -> str:
        """The value when it is a JSON number, else NULL."""
        if self.dialect == "sqlite":
            return f"(CASE WHEN {self._sl_type} IN ('integer', 'real') THEN {self._sl_value} END)"
        typ = f"jsonb_typeof({self._jsonb})"
        return f"(CASE WHEN {typ} = 'number' THEN {self._pg_text}::numeric END)"

    @property
    def text(self) -> str:
        """The value when it is a JSON string, else NULL (code point order on both dialects)."""
        if self.dialect == "sqlite":
            return f"(CASE WHEN {self._sl_type} = 'text' THEN {self._sl_value} END)"
        typ = f"jsonb_typeof({self._jsonb})"
        return f"(CASE WHEN {typ} = 'string' THEN {self._pg_text} END) COLLATE \"C\""

    def _typed(self, v: Any) -> tuple[str, str]:
        """(expression, placeholder) comparing like with like for a number or string ``v``."""
        if isinstance(v, str):
            return self.text, "?" if self.dialect == "sqlite" else "%s"
        return self.num, "?" if self.dialect == "sqlite" else "%s::numeric"

    def eq(self, v: Any) -> Frag:
        if v is None:  # JSON null or missing
            return f"{self._sl_value if self.dialect == 'sqlite' else self._pg_text} IS NULL", []
        if isinstance(v, bool):
            lit = "true" if v else "false"
            if self.dialect == "sqlite":
                return f"{self._sl_type} = '{lit}'", []
            return f"{self._jsonb} = '{lit}'::jsonb", []
        return self.cmp("=", v)

    def is_in(self, values: Sequence[Any]) -> Frag:
        return any_of([self.eq(v) for v in values])

    def cmp(self, op: str, v: Any) -> Frag:
        expr, ph = self._typed(v)
        # PostgreSQL gets numbers as their JSON text, cast to numeric: exact, like jsonb itself.
        exact = self.dialect == "postgres" and not isinstance(v, str)
        return f"{expr} {op} {ph}", [json.dumps(v) if exact else v]

    def contains(self, v: Any) -> Frag:
        """Array holds an element equal to ``v``; or, for a string ``v``, string has substring."""
        if self.dialect == "sqlite":
            if isinstance(v, bool):
                elem: Frag = (f"je.type = '{'true' if v else 'false'}'", [])
            elif isinstance(v, str):
                elem = ("je.type = 'text' AND je.value = ?", [v])
            else:
                elem = ("je.type IN ('integer', 'real') AND je.value = ?", [v])
            arr: Frag = (
                f"{self._sl_type} = 'array' AND EXISTS (SELECT 1 FROM json_each({self.doc},"
                f" {self._sl_path}) AS je WHERE {elem[0]})",
                elem[1],
            )
        else:
            arr = (
                f"jsonb_typeof({self._jsonb}) = 'array' AND {self._jsonb} @> %s::jsonb",
                [json.dumps([v])],
            )
        if not isinstance(v, str):
            return arr
        fn = "instr" if self.dialect == "sqlite" else "strpos"
        return any_of([arr, (f"{fn}({self.text}, {self._typed(v)[1]}) > 0", [v])])

    def regex(self, pattern: str) -> Frag:
        op = "REGEXP ?" if self.dialect == "sqlite" else "~ %s"
        return f"{self.text} {op}", [pattern]

    def order(self, desc: bool) -> list[str]:
        d = _dir(desc)
        return [f"{self.rank} {d}", f"{self.num} {d}", f"{self.text} {d}"]

    def after(self, v: Any, desc: bool) -> Frag:
        r, op = json_rank(v), "<" if desc else ">"
        frags: list[Frag] = [(f"{self.rank} {op} {r}", [])]
        if r in (NUM_RANK, STR_RANK):
            frags.append(self.cmp(op, v))
        return any_of(frags)

    def same(self, v: Any) -> Frag:
        r = json_rank(v)
        return self.cmp("=", v) if r in (NUM_RANK, STR_RANK) else (f"{self.rank} = {r}", [])


Target = Column | JsonPath
