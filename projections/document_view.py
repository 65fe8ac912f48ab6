"""A view of one row per entity (promoted columns + JSON), on SQLite and PostgreSQL.

A `ViewSchema` names the columns and the fold; the two recorder subclasses give each backend
its DDL and SQL. Rows are plain dicts keyed by column name; JSON columns hold Python values.
The batch write (load affected rows, fold, upsert, tracking) is in one transaction.

`rebuild()` is the bulk path of a rebuild: one transaction that empties the view, drops its
secondary indexes, folds every event in memory (each entity written once per chunk of rows,
new rows by plain INSERT on SQLite and binary COPY on PostgreSQL), creates the same indexes
again and records the last position. Until it commits, readers see the old view (SQLite) or
wait for the new one (PostgreSQL: TRUNCATE locks the table); if it fails, nothing changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteConnection, SQLiteTrackingRecorder
from psycopg import Copy, Cursor
from psycopg.errors import InvalidRegularExpression
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import set_json_dumps

from foundry.projections import quarantine as q
from foundry.projections.batching import fold_batch
from foundry.projections.query import QueryError, TableSpec
from foundry.projections.query_regex import regex_budget, sqlite_regexp

Kind = Literal["text", "int", "real", "bool", "json"]
Row = dict[str, Any]

_SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "bool": "INTEGER",
                 "json": "TEXT"}
# COLLATE "C": byte order, the order SQLite uses, so both backends sort and page alike.
_PG_TYPES = {"text": 'text COLLATE "C"', "int": "bigint", "real": "double precision",
             "bool": "boolean", "json": "jsonb"}
_PG_COPY_TYPES = {"text": "text", "int": "int8", "real": "float8", "bool": "bool",
                  "json": "jsonb"}


_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)


def unapplied(items: Sequence[tuple[Any, int]], position: int | None
              ) -> Sequence[tuple[Any, int]]:
    """The items after the view's recorded position.

    Two catch-ups can read overlapping pages (A reads 1..1000, B reads 1..1200 once more
    events arrived). Checking only that a page ends ahead of the position would let B apply
    1..1000 a second time after A committed; read under the view's write lock, the position
    says exactly which events are new. A page is contiguous from where its reader started, so
    what is after the position is exactly what is missing.
    """
    if position is None:
        return items
    return [item for item in items if item[1] > position]


def position_lock_key(*names: str) -> int:
    digest = hashlib.sha256("/".join(("foundry-view-position", *names)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def json_bytes(value: Any) -> bytes:
    """The JSON text a view stores for `value`, as UTF-8.

    orjson, because encoding the documents was a third of a rebuild with `json.dumps` (48 of
    ~150 µs per 1.75 KB recipe). What orjson refuses (non-string keys, integers beyond 64 bits,
    str/int subclasses, datetimes, dataclasses) goes to `json.dumps`, which encodes it as
    before or raises as before. Two differences remain, both where `json.dumps` wrote what no
    store accepts as JSON: NaN and Infinity become null (json wrote NaN, which PostgreSQL's
    jsonb and SQLite's JSON functions reject), and UUIDs and plain Enums are encoded (json
    raised). Incremental updates and rebuilds both use this, so they store the same values.
    """
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(value).encode()


def json_text(value: Any) -> str:
    return json_bytes(value).decode()


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

    def values(self, row: Row, encode: Callable[[Any], Any] = json_text) -> tuple[Any, ...]:
        """The row as statement parameters (JSON columns as text, or as `encode` makes them)."""
        return tuple(
            encode(row.get(c)) if k == "json" else (bool(row.get(c)) if k == "bool"
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


class _BulkFold:
    """The rows of a rebuild, folded in memory and written a chunk at a time.

    A rebuild starts from an empty view, so an entity never seen before has no row: no read
    is needed. An entity whose row was already written (an earlier chunk) is read back from
    the view, inside the rebuild's transaction, and written again (`replace`).
    """

    def __init__(
        self, schema: ViewSchema, load: Callable[[list[str]], dict[str, Row]],
        write: Callable[[list[Row], list[Row]], None], chunk_rows: int,
    ) -> None:
        self.schema, self.load, self.write, self.chunk_rows = schema, load, write, chunk_rows
        self.pending: dict[str, Row] = {}
        self.written: set[str] = set()
        self.events = 0
        self.last: int | None = None

    def add(self, items: Sequence[tuple[Any, int]]) -> None:
        if not items:
            return
        s, pending = self.schema, self.pending
        keys = [s.key_of(e) for e, _ in items]
        again = {k for k in keys if k not in pending and k in self.written}
        if again:
            pending.update(self.load(sorted(again)))
        fold = s.fold
        for key, (event, _) in zip(keys, items, strict=True):
            try:
                pending[key] = fold(pending.get(key), event)
            except Exception as e:  # the event's own fault: the host rebuilds by catch-up
                raise q.EventFaultError(key) from e
        self.events += len(items)
        self.last = items[-1][1]
        if len(pending) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        written = self.written
        new = [r for k, r in self.pending.items() if k not in written]
        replace = [r for k, r in self.pending.items() if k in written]
        self.write(new, replace)
        written.update(self.pending)
        self.pending = {}


class SQLiteDocumentView(SQLiteTrackingRecorder):
    """A document view in a SQLite file (the views file, shared by every view)."""

    schema: ViewSchema
    dialect = "sqlite"
    # Rows a rebuild keeps in memory before writing them; an entity's later events then read
    # its row back from the view (inside the same transaction) and write it again.
    rebuild_chunk_rows = 20_000

    def construct_create_table_statements(self) -> list[str]:
        s = self.schema
        cols = ", ".join(
            f"{c} {_SQLITE_TYPES[k]}" + (" PRIMARY KEY" if c == s.key else "")
            for c, k in s.columns
        )
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {s.name} ({cols})",
            f"CREATE TABLE IF NOT EXISTS {s.name}_quarantine (application_name TEXT, "
            "notification_id INTEGER, originator_id TEXT, version INTEGER, topic TEXT, "
            "row_key TEXT, reason TEXT, PRIMARY KEY (application_name, notification_id))",
            f"CREATE INDEX IF NOT EXISTS {s.name}_quarantine_row ON {s.name}_quarantine "
            "(row_key)",
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

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> int:
        """Fold the items after the view's position into it; returns how many that was."""
        with self.datastore.transaction(commit=True) as c:
            # Write first: a deferred SQLite transaction that reads and then writes cannot wait
            # for another writer (the upgrade fails at once with "database is locked"); one
            # that starts with a write waits for the lock (SQLITE_LOCK_TIMEOUT). This no-op
            # UPDATE takes the lock, so the position read next cannot move under us.
            c.execute("UPDATE tracking SET notification_id = "
                      "notification_id WHERE application_name = ?", (application_name,))
            c.execute("SELECT MAX(notification_id) FROM tracking "
                      "WHERE application_name = ?", (application_name,))
            items = unapplied(items, c.fetchone()[0])
            if not items:
                return 0
            self.write_items(c, application_name, items)
        return len(items)

    def write_items(self, c: Any, application_name: str, items: Sequence[tuple[Any, int]],
                    position: int | None = None) -> dict[str, Row]:
        """Fold `items` (all after the position) into their rows and record the position
        (the last item's, or `position`), on the cursor of a transaction that holds the write
        lock; returns the rows written. The caller commits."""
        s = self.schema
        ids = sorted({s.key_of(e) for e, _ in items})
        self._insert_tracking(
            c, Tracking(application_name, items[-1][1] if position is None else position))
        c.execute(f"SELECT * FROM {s.name} WHERE {s.key} IN ({','.join('?' * len(ids))})",
                  ids)
        rows = {r[s.key]: s.load(r) for r in c.fetchall()}
        changed = fold_batch(rows, items, s.fold, s.key_of)
        new = [r for k, r in changed.items() if k not in rows]
        c.executemany(
            f"INSERT INTO {s.name} ({', '.join(s.names)}) "
            f"VALUES ({','.join('?' * len(s.columns))})",
            [s.values(r) for r in new],
        )
        for key, row in changed.items():
            if key in rows:
                self._update(c, rows[key], row)
        return changed

    def _update(self, c: Any, old: Row, row: Row) -> None:
        """UPDATE only the columns that changed: SQLite then leaves the indexes of the others
        alone (INSERT OR REPLACE rewrote the row and every index entry: 8 pages written per
        edit instead of 2, and each page is part of the commit's fsync)."""
        s = self.schema
        values = dict(zip(s.names, s.values(row), strict=True))
        before = dict(zip(s.names, s.values(old), strict=True))
        cols = [n for n in s.names[1:] if values[n] != before[n]]
        if cols:
            c.execute(f"UPDATE {s.name} SET {', '.join(f'{n} = ?' for n in cols)} "
                      f"WHERE {s.key} = ?", [*(values[n] for n in cols), values[s.key]])

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.schema.name}")
            c.execute("DELETE FROM tracking WHERE application_name = ?", (application_name,))
            c.execute(f"DELETE FROM {self.schema.name}_quarantine WHERE application_name = ?",
                      (application_name,))

    def quarantine(self, application_name: str, records: Sequence[q.Quarantined]) -> int:
        """Set aside events the view cannot apply and move its position past them, in one
        transaction (foundry.projections.quarantine); returns how many were new."""
        with self.datastore.transaction(commit=True) as c:
            c.execute("UPDATE tracking SET notification_id = "  # the lock, as in apply_batch
                      "notification_id WHERE application_name = ?", (application_name,))
            c.execute("SELECT MAX(notification_id) FROM tracking "
                      "WHERE application_name = ?", (application_name,))
            position = c.fetchone()[0] or 0
            records = [r for r in records if r.notification_id > position]
            if not records:
                return 0
            c.executemany(
                f"INSERT OR IGNORE INTO {self.schema.name}_quarantine "
                f"({', '.join(q.COLUMNS)}) VALUES ({','.join('?' * len(q.COLUMNS))})",
                [q.values(application_name, r) for r in records])
            self._insert_tracking(c, Tracking(application_name, records[-1].notification_id))
        return len(records)

    def quarantined(self, key: str | None = None) -> list[q.Quarantined]:
        """The events this view set aside (those of one row, with `key`), in log order."""
        where = " WHERE row_key = ?" if key is not None else ""
        with self._reading() as c:
            c.execute(f"SELECT * FROM {self.schema.name}_quarantine{where} "
                      "ORDER BY application_name, notification_id",
                      [] if key is None else [key])
            return [q.load(r) for r in c.fetchall()]

    def rebuild(self, application_name: str, pages: Iterable[Sequence[tuple[Any, int]]],
                chunk_rows: int | None = None) -> int:
        """Replace the rows and position with the fold of `pages`, in one transaction; returns
        the number of events. Other writers of the views file wait until it commits."""
        s = self.schema
        insert = (f"INSERT INTO {s.name} ({', '.join(s.names)}) "
                  f"VALUES ({','.join('?' * len(s.columns))})")
        with self.datastore.get_connection(commit=True) as conn, _bulk_pragmas(conn), \
                conn.transaction(commit=True) as c:

            def empty() -> list[tuple[str, str]]:
                # A write first, so that the transaction waits for the lock (see apply_batch).
                c.execute(f"DELETE FROM {s.name}")
                c.execute("DELETE FROM tracking WHERE application_name = ?",
                          (application_name,))
                c.execute(f"DELETE FROM {s.name}_quarantine WHERE application_name = ?",
                          (application_name,))
                # Indexes are built once at the end: faster than keeping 6 B-trees up to date
                # through 100k random inserts. Their own statements make them again.
                c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                          "AND tbl_name = ? AND sql IS NOT NULL", (s.name,))
                indexes = [(r[0], r[1]) for r in c.fetchall()]
                for name, _ in indexes:
                    c.execute(f'DROP INDEX "{name}"')
                return indexes

            # Emptying the old rows visits every page of the table (0.3 s at 100k recipes) in
            # SQLite's C code, without the GIL: a thread does it while the first pages are
            # read, decoded and folded. Nothing else uses the connection until it is done.
            emptied = _InThread(empty)

            def load(keys: list[str]) -> dict[str, Row]:
                emptied.result()
                c.execute(f"SELECT * FROM {s.name} WHERE {s.key} IN "
                          f"({','.join('?' * len(keys))})", keys)
                return {r[s.key]: s.load(r) for r in c.fetchall()}

            def write(new: list[Row], replace: list[Row]) -> None:
                emptied.result()
                c.executemany(insert, [s.values(r) for r in new])
                if replace:
                    c.executemany(insert.replace("INSERT", "INSERT OR REPLACE", 1),
                                  [s.values(r) for r in replace])

            try:
                bulk = _BulkFold(s, load, write, chunk_rows or self.rebuild_chunk_rows)
                for items in pages:
                    bulk.add(items)
                bulk.flush()
                indexes = emptied.result()
            finally:
                emptied.join()  # before the rollback, if this is an exception
            for _, sql in indexes:
                c.execute(sql)
            if bulk.last is not None:
                self._insert_tracking(c, Tracking(application_name, bulk.last))
        return bulk.events

    def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self._reading() as c:
            _execute_query(c, sql, params)
            return [self.schema.load(r) for r in c.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        with self._reading() as c:
            _execute_query(c, sql, params)
            return c.fetchone()[0]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        """A read transaction on a connection that knows REGEXP (`$regex` filters)."""
        with self.datastore.get_connection(commit=False) as conn, \
                conn.transaction(commit=False) as c:
            with_regexp(conn)
            yield c

    def get(self, key: str) -> Row | None:
        """The row with this key, or None; `QuarantinedRecordError` if the view set aside an
        event of it (the row would be shown as current without that event)."""
        rows = self.fetch(
            f"SELECT * FROM {self.table} WHERE {self.schema.key} = {self.placeholder()}", [key])
        if set_aside := self.quarantined(key):
            raise q.QuarantinedRecordError(self.schema.name, key, set_aside)
        return rows[0] if rows else None

    def placeholder(self) -> str:
        return "?"


class PostgresDocumentView(PostgresTrackingRecorder):
    """A document view in the same PostgreSQL database (and schema) as the events."""

    schema: ViewSchema
    dialect = "postgres"
    # Fewer than on SQLite: rows go to the server as soon as they are written, and a small
    # chunk keeps it busy parsing while the next chunk is folded.
    rebuild_chunk_rows = 2_000

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
        self.quarantine_sql = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                                  Identifier(f"{self.table_name}_quarantine"))
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {} (application_name text, notification_id bigint, "
            "originator_id text, version bigint, topic text, row_key text, reason text, "
            "PRIMARY KEY (application_name, notification_id))").format(self.quarantine_sql))
        self.sql_create_statements.append(SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} (row_key)").format(
            Identifier(f"{self.table_name}_quarantine_row"), self.quarantine_sql))
        for i in s.indexed:
            # NULLS FIRST, the order projections/query.py sorts in: PostgreSQL can then walk the
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

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> int:
        """Fold the items after the view's position into it; returns how many that was."""
        with self.datastore.transaction(commit=True) as curs:
            # The view is rebuildable and its tracking commits with it: an async commit
            # risks only redoing the last batches after a crash, never a double apply.
            curs.execute("SET LOCAL synchronous_commit TO OFF")
            items = unapplied(items, self.lock_position(curs, application_name))
            if not items:
                return 0
            self.write_items(curs, application_name, items)
        return len(items)

    def position_lock(self, application_name: str) -> int:
        return position_lock_key(self.datastore.schema, self.table_name, application_name)

    def lock_position(self, curs: Cursor[DictRow], application_name: str) -> int | None:
        """Take this view's position lock (until the transaction ends) and read the position:
        one writer of the position at a time, so only events after it are applied."""
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (self.position_lock(application_name),))
        curs.execute(SQL("SELECT MAX(notification_id) AS n FROM {}.{} "
                         "WHERE application_name = %s").format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name)),
            (application_name,))
        row = curs.fetchone()
        return row["n"] if row else None

    def write_items(self, curs: Cursor[DictRow], application_name: str,
                    items: Sequence[tuple[Any, int]], position: int | None = None
                    ) -> dict[str, Row]:
        """Fold `items` (all after the position) into their rows and record the position
        (the last item's, or `position`), in a transaction that holds the position lock;
        returns the rows written. The caller commits."""
        s = self.schema
        names = SQL(", ").join(Identifier(n) for n in s.names)
        updates = SQL(", ").join(
            SQL("{0} = EXCLUDED.{0}").format(Identifier(n)) for n in s.names[1:])
        ids = sorted({s.key_of(e) for e, _ in items})
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
        self._insert_tracking(
            curs, Tracking(application_name, items[-1][1] if position is None else position))
        return changed

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._reset(curs, application_name)

    def quarantine(self, application_name: str, records: Sequence[q.Quarantined]) -> int:
        """Set aside events the view cannot apply and move its position past them, in one
        transaction under the position lock (foundry.projections.quarantine); returns how
        many were new."""
        with self.datastore.transaction(commit=True) as curs:
            position = self.lock_position(curs, application_name) or 0
            records = [r for r in records if r.notification_id > position]
            if not records:
                return 0
            curs.executemany(SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING")
                             .format(self.quarantine_sql,
                                     SQL(", ").join(Identifier(n) for n in q.COLUMNS),
                                     SQL(", ").join([SQL("%s")] * len(q.COLUMNS))),
                             [q.values(application_name, r) for r in records])
            self._insert_tracking(curs, Tracking(application_name,
                                                 records[-1].notification_id))
        return len(records)

    def quarantined(self, key: str | None = None) -> list[q.Quarantined]:
        """The events this view set aside (those of one row, with `key`), in log order."""
        where = SQL(" WHERE row_key = %s") if key is not None else SQL("")
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT * FROM {}{} ORDER BY application_name, notification_id")
                         .format(self.quarantine_sql, where), [] if key is None else [key])
            return [q.load(r) for r in curs.fetchall()]

    def _reset(self, curs: Cursor[DictRow], application_name: str) -> None:
        curs.execute(SQL("DELETE FROM {} WHERE application_name = %s").format(
            self.quarantine_sql), (application_name,))
        # TRUNCATE, not DELETE: a rebuild would otherwise leave every old row dead.
        curs.execute(SQL("TRUNCATE {}").format(self.table_sql))
        curs.execute(SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name)),
            (application_name,))

    def rebuild(self, application_name: str, pages: Iterable[Sequence[tuple[Any, int]]],
                chunk_rows: int | None = None) -> int:
        """Replace the rows and position with the fold of `pages`, in one transaction; returns
        the number of events. Readers of the view wait (TRUNCATE's lock) until it commits."""
        s = self.schema
        names = SQL(", ").join(Identifier(n) for n in s.names)
        copy = SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(self.table_sql, names)
        upsert = SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
            self.table_sql, names, SQL(", ").join([SQL("%s")] * len(s.columns)),
            Identifier(s.key), SQL(", ").join(
                SQL("{0} = EXCLUDED.{0}").format(Identifier(n)) for n in s.names[1:]))
        with self.datastore.transaction(commit=True) as curs:
            self._begin_rebuild(curs, application_name)
            indexes = self._drop_secondary_indexes(curs)
            # JSON goes to COPY already encoded (the same json_bytes as apply_batch), so a
            # None becomes JSON null, as there, and not SQL NULL.
            set_json_dumps(_encoded_json, curs)
            stream = _CopyStream(curs, copy, [_PG_COPY_TYPES[k] for _, k in s.columns])

            def load(keys: list[str]) -> dict[str, Row]:
                stream.close()
                curs.execute(SQL("SELECT * FROM {} WHERE {} = ANY(%s)").format(
                    self.table_sql, Identifier(s.key)), (keys,))
                return {r[s.key]: s.load(r) for r in curs.fetchall()}

            def write(new: list[Row], replace: list[Row]) -> None:
                if replace:
                    stream.close()
                    curs.executemany(upsert, [s.values(r) for r in replace])
                if new:
                    stream.write([s.values(r, json_bytes) for r in new])

            with stream:
                bulk = _BulkFold(s, load, write, chunk_rows or self.rebuild_chunk_rows)
                for items in pages:
                    bulk.add(items)
                bulk.flush()
            for _, ddl in indexes:
                curs.execute(ddl.encode())
            if bulk.last is not None:
                self._insert_tracking(curs, Tracking(application_name, bulk.last))
        return bulk.events

    def _begin_rebuild(self, curs: Cursor[DictRow], application_name: str) -> None:
        """Session settings for a bulk load, the position lock, then an empty view."""
        # As in apply_batch: the view is rebuildable and its position commits with it.
        curs.execute("SET LOCAL synchronous_commit TO OFF")
        curs.execute("SET LOCAL maintenance_work_mem TO '256MB'")  # the index builds
        # The position lock: an edit that writes this view in its own transaction
        # (foundry.projections.inline) waits, then reads the rebuilt position.
        curs.execute("SELECT pg_advisory_xact_lock(%s)",
                     (self.position_lock(application_name),))
        # Documents over ~2 KB are compressed as they are stored: lz4 costs the server
        # 19 µs a recipe row where the default pglz costs 27 (COPY of 100k). Only how the
        # bytes are kept differs; rows written later by apply_batch use the default again.
        curs.execute("SELECT 'lz4' = ANY(enumvals) AS lz4 FROM pg_settings "
                     "WHERE name = 'default_toast_compression'")
        if (found := curs.fetchone()) and found["lz4"]:
            curs.execute("SET LOCAL default_toast_compression TO 'lz4'")
        self._reset(curs, application_name)

    def _drop_secondary_indexes(self, curs: Cursor[DictRow]) -> list[tuple[str, str]]:
        """Drop the view's secondary indexes; returns (name, definition) to build them again."""
        # Secondary indexes are built once after the load (COPY into a table that keeps 6
        # indexes up to date was 1.6x slower), from their own definitions, so they come
        # back exactly as they were, whoever made them. The primary key stays.
        curs.execute(
            "SELECT c.relname AS name, pg_get_indexdef(c.oid) AS ddl FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)",
            (self.table,))
        indexes = [(r["name"], r["ddl"]) for r in curs.fetchall()]
        for name, _ in indexes:
            curs.execute(SQL("DROP INDEX {}.{}").format(
                Identifier(self.datastore.schema), Identifier(name)))
        return indexes

    def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self.datastore.transaction(commit=False) as curs:
            _execute_pg_query(curs, sql, params)
            return [self.schema.load(r) for r in curs.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        with self.datastore.transaction(commit=False) as curs:
            _execute_pg_query(curs, sql, params)
            row = curs.fetchone()
            assert row is not None
            return next(iter(row.values()))

    def get(self, key: str) -> Row | None:
        """The row with this key, or None; `QuarantinedRecordError` if the view set aside an
        event of it (the row would be shown as current without that event)."""
        rows = self.fetch(
            f"SELECT * FROM {self.table} WHERE {self.schema.key} = {self.placeholder()}", [key])
        if set_aside := self.quarantined(key):
            raise q.QuarantinedRecordError(self.schema.name, key, set_aside)
        return rows[0] if rows else None

    def placeholder(self) -> str:
        return "%s"


# The connections REGEXP is registered on. SQLite's create_function expires every prepared
# statement of the connection, so it is done once per connection, not once per query.
_WITH_REGEXP: weakref.WeakSet[SQLiteConnection] = weakref.WeakSet()


def with_regexp(connection: SQLiteConnection) -> None:
    """Give `connection` the `regexp` function `$regex` compiles to (query_regex)."""
    if connection not in _WITH_REGEXP:
        connection._sqlite_conn.create_function("regexp", 2, sqlite_regexp, deterministic=True)
        _WITH_REGEXP.add(connection)


def _execute_query(c: Any, sql: str, params: Sequence[Any]) -> None:
    """Run a read query; a `$regex` that ran out of time (SQLite aborts the statement) is the
    caller's error, reported as such rather than as a store failure."""
    with regex_budget() as budget:
        try:
            c.execute(sql, list(params))
        except sqlite3.OperationalError:
            if budget.exceeded:
                raise QueryError("filter", f"$regex: {budget.exceeded}") from None
            raise


def _execute_pg_query(curs: Cursor[DictRow], sql: str, params: Sequence[Any]) -> None:
    try:
        curs.execute(sql.encode(), list(params))
    except InvalidRegularExpression as e:  # query_regex's subset should never get here
        raise QueryError("filter", f"$regex refused by PostgreSQL: {e}") from None


class _CopyStream:
    """One COPY kept open across chunks, so that the server parses the rows already sent
    (jsonb input is its largest cost) while the next ones are folded; closed (and opened
    again later) when the rebuild needs the connection for a statement."""

    def __init__(self, curs: Cursor[DictRow], statement: Composed, types: list[str]) -> None:
        self.curs, self.statement, self.types = curs, statement, types
        self._stack: contextlib.ExitStack | None = None
        self._copy: Copy | None = None

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if self._copy is None:
            self._stack = contextlib.ExitStack()
            self._copy = self._stack.enter_context(self.curs.copy(self.statement))
            self._copy.set_types(self.types)
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)

    def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._copy = self._stack, None, None
            stack.close()

    def __enter__(self) -> _CopyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack, self._copy = self._stack, None, None
            stack.__exit__(*exc)  # type: ignore[arg-type]


class _InThread:
    """`fn()` running in a thread; `result()` waits for it and returns or raises its result."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True,
                                        name="view-rebuild")
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as e:  # handed to the caller by result()
            self._error = e

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _encoded_json(value: Any) -> bytes:
    """psycopg's JSON dumps for a rebuild's COPY: the values are json_bytes already."""
    return value if type(value) is bytes else json_bytes(value)


@contextlib.contextmanager
def _bulk_pragmas(conn: SQLiteConnection) -> Iterator[None]:
    """SQLite settings for a rebuild's connection, put back afterwards.

    synchronous=NORMAL: in WAL mode a commit then skips its fsync (the checkpoint still syncs);
    a power cut may lose the last rebuild, never leave it half applied, and the view is
    rebuildable anyway. A 128 MiB page cache keeps the new table and index pages in memory
    instead of spilling them to the WAL in the middle of the transaction.
    """
    cur = conn.cursor()
    saved = {}
    for pragma, value in (("synchronous", 1), ("cache_size", -131072)):
        cur.execute(f"PRAGMA {pragma}")
        saved[pragma] = cur.fetchone()[0]
        cur.execute(f"PRAGMA {pragma} = {value}")
    try:
        yield
    finally:
        for pragma, value in saved.items():
            cur.execute(f"PRAGMA {pragma} = {int(value)}")
