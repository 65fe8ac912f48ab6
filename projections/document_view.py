"""A view of one row per entity (promoted columns + JSON), on SQLite and PostgreSQL.

A `ViewSchema` names the columns and the fold; the two recorder subclasses give each backend
its DDL and SQL. Rows are plain dicts keyed by column name; JSON columns hold Python values.
The batch write (load affected rows, fold, upsert, tracking) is in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from projections.batching import fold_batch, last_tracking
from projections.query import TableSpec

Kind = Literal["text", "int", "real", "bool", "json"]
Row = dict[str, Any]

_SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "bool": "INTEGER",
                 "json": "TEXT"}
# COLLATE "C": byte order, the order SQLite uses, so both backends sort and page alike.
_PG_TYPES = {"text": 'text COLLATE "C"', "int": "bigint", "real": "double precision",
             "bool": "boolean", "json": "jsonb"}


@dataclass(frozen=True)
class ViewSchema:
    """What a document view stores and how events change it."""

    name: str  # table base name, e.g. "recipes"
    columns: tuple[tuple[str, Kind], ...]  # the first column is the primary key
    fold: Callable[[Row | None, Any], Row]
    key_of: Callable[[Any], str]  # the row an event belongs to
    query_columns: Mapping[str, tuple[str, str]]  # field path -> (column, kind) for queries
    indexed: tuple[str, ...] = ()
    doc_column: str = "doc"

    @property
    def key(self) -> str:
        return self.columns[0][0]

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def values(self, row: Row) -> tuple[Any, ...]:
        return tuple(
            json.dumps(row.get(c)) if k == "json" else (bool(row.get(c)) if k == "bool"
                                                          else row.get(c))
            for c, k in self.columns
        )

    def load(self, record: Mapping[str, Any]) -> Row:
        row: Row = {}
        for c, k in self.columns:
            v = record[c]
            if k == "json" and isinstance(v, str | bytes):
                v = json.loads(v)
            elif k == "bool":
                v = bool(v)
            row[c] = v
        return row


class SQLiteDocumentView(SQLiteTrackingRecorder):
    """A document view in a SQLite file (the views file, shared by every view)."""

    schema: ViewSchema
    dialect = "sqlite"

    def construct_create_table_statements(self) -> list[str]:
        s = self.schema
        cols = ", ".join(
            f"{c} {_SQLITE_TYPES[k]}" + (" PRIMARY KEY" if c == s.key else "")
            for c, k in s.columns
        )
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {s.name} ({cols})",
            *(f"CREATE INDEX IF NOT EXISTS {s.name}_{i} ON {s.name} ({i}, {s.key})"
              for i in s.indexed),
        ]

    @property
    def table(self) -> str:
        return self.schema.name

    @property
    def spec(self) -> TableSpec:
        return TableSpec(table=self.schema.name, doc_column=self.schema.doc_column,
                         columns=self.schema.query_columns, key_column=self.schema.key)

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> None:
        s = self.schema
        ids = sorted({s.key_of(e) for e, _ in items})
        with self.datastore.transaction(commit=True) as c:
            # Write first: a deferred SQLite transaction that reads and then writes cannot wait
            # for another writer (the upgrade fails at once with "database is locked"); one
            # that starts with a write waits for the lock (SQLITE_LOCK_TIMEOUT). A batch that
            # another process applied first still fails here, with IntegrityError.
            self._insert_tracking(c, last_tracking(application_name, items))
            c.execute(f"SELECT * FROM {s.name} WHERE {s.key} IN ({','.join('?' * len(ids))})",
                      ids)
            rows = {r[s.key]: s.load(r) for r in c.fetchall()}
            changed = fold_batch(rows, items, s.fold, s.key_of)
            c.executemany(
                f"INSERT OR REPLACE INTO {s.name} ({', '.join(s.names)}) "
                f"VALUES ({','.join('?' * len(s.columns))})",
                [s.values(r) for r in changed.values()],
            )

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.schema.name}")
            c.execute("DELETE FROM tracking WHERE application_name = ?", (application_name,))

    def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, list(params))
            return [self.schema.load(r) for r in c.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, list(params))
            return c.fetchone()[0]

    def get(self, key: str) -> Row | None:
        """The row with this key, or None."""
        rows = self.fetch(
            f"SELECT * FROM {self.table} WHERE {self.schema.key} = {self.placeholder()}", [key])
        return rows[0] if rows else None

    def placeholder(self) -> str:
        return "?"


class PostgresDocumentView(PostgresTrackingRecorder):
    """A document view in the same PostgreSQL database (and schema) as the events."""

    schema: ViewSchema
    dialect = "postgres"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.schema
        base = self.tracking_table_name.removesuffix("_tracking")
        self.table_name = f"{base}_{s.name}"
        self.table_sql = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                             Identifier(self.table_name))
        cols = ", ".join(
            f'"{c}" {_PG_TYPES[k]}' + (" PRIMARY KEY" if c == s.key else "")
            for c, k in s.columns
        )
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {} (" + cols + ")").format(self.table_sql))
        for i in s.indexed:
            # NULLS FIRST, the order projections.query sorts in: PostgreSQL can then walk the
            # index either way instead of sorting every row (measured 693 -> 18 ms at 100k).
            self.sql_create_statements.append(SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({} NULLS FIRST, {} NULLS FIRST)")
                .format(Identifier(f"{self.table_name}_{i}_nf"), self.table_sql, Identifier(i),
                        Identifier(s.key)))

    @property
    def table(self) -> str:
        return f'"{self.datastore.schema}"."{self.table_name}"'

    @property
    def spec(self) -> TableSpec:
        return TableSpec(table=self.table, doc_column=self.schema.doc_column,
                         columns=self.schema.query_columns, key_column=self.schema.key)

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> None:
        s = self.schema
        ids = sorted({s.key_of(e) for e, _ in items})
        names = SQL(", ").join(Identifier(n) for n in s.names)
        updates = SQL(", ").join(
            SQL("{0} = EXCLUDED.{0}").format(Identifier(n)) for n in s.names[1:])
        with self.datastore.transaction(commit=True) as curs:
            # The view is rebuildable and its tracking commits with it: an async commit
            # risks only redoing the last batches after a crash, never a double apply.
            curs.execute("SET LOCAL synchronous_commit TO OFF")
            curs.execute(SQL("SELECT * FROM {} WHERE {} = ANY(%s)").format(
                self.table_sql, Identifier(s.key)), (ids,))
            rows = {r[s.key]: s.load(r) for r in curs.fetchall()}
            changed = fold_batch(rows, items, s.fold, s.key_of)
            curs.executemany(
                SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
                    self.table_sql, names, SQL(", ").join([SQL("%s")] * len(s.columns)),
                    Identifier(s.key), updates),
                [s.values(r) for r in changed.values()],
            )
            self._insert_tracking(curs, last_tracking(application_name, items))

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            # TRUNCATE, not DELETE: a rebuild would otherwise leave every old row dead.
            curs.execute(SQL("TRUNCATE {}").format(self.table_sql))
            curs.execute(SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                Identifier(self.datastore.schema), Identifier(self.tracking_table_name)),
                (application_name,))

    def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(sql.encode(), list(params))
            return [self.schema.load(r) for r in curs.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(sql.encode(), list(params))
            row = curs.fetchone()
            assert row is not None
            return next(iter(row.values()))

    def get(self, key: str) -> Row | None:
        """The row with this key, or None."""
        rows = self.fetch(
            f"SELECT * FROM {self.table} WHERE {self.schema.key} = {self.placeholder()}", [key])
        return rows[0] if rows else None

    def placeholder(self) -> str:
        return "%s"
