"""A view written in the very transaction that records the events it is folded from.

The application recorder (foundry.adapters.store.persistence) calls `InlineProjection.write`
inside the transaction that inserts an edit's events and its command record. The view's rows
and its tracking position go into that transaction, so one commit makes all of them durable,
or none: there is no moment at which the events exist and the view row does not (a crash
between two commits is impossible because there is only one commit). On SQLite that needs
the view in the same database file as the events: a transaction cannot span two WAL files
atomically.

Applied only when the view is in step: no event with one of its topics lies between its
position and this transaction's first notification id. Otherwise (a view being rebuilt,
events recorded by a process without this hook, a store from before the view moved) the
transaction records the events alone and catch-up applies them after the older ones: writing
this row now and moving the position past unapplied events would lose those events.

Why the position cannot move under the check: the check runs under the lock that orders
event inserts (SQLite: the database's write lock, held from the transaction's first insert;
PostgreSQL: the library's EXCLUSIVE lock on the events table) and, on PostgreSQL, under the
view's position lock, which catch-up (`apply_batch`) and `rebuild` take as well. A catch-up
that read these events before they committed re-reads the position under that lock and skips
them (`document_view.unapplied`): nothing is applied twice. On PostgreSQL the edit only
tries that lock: while a rebuild or a catch-up batch holds it, the edit commits its events
alone and catch-up applies them, so edits never queue behind a rebuild. On SQLite they do:
a rebuild holds the database's write lock until it commits (SQLITE_LOCK_TIMEOUT, 30 s).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent

from foundry.projections.batching import fold_batch
from foundry.projections.replay import FastDecoder

Row = dict[str, Any]


@dataclass
class PendingReads:
    """Cursors of reads queued in a PostgreSQL pipeline: the position lock (taken or not),
    the view's position, its rows."""

    locked: Any
    position: Any
    rows: Any

    def close(self) -> None:
        for cursor in (self.locked, self.position, self.rows):
            cursor.close()


class _PgStatements:
    """A PostgreSQL view's statements, rendered to bytes once (psycopg renders a composed
    query again on every execute, ~0.1 ms each)."""

    def __init__(self, view: Any) -> None:
        from psycopg.sql import SQL, Identifier, as_bytes

        s = view.schema
        names = SQL(", ").join(Identifier(n) for n in s.names)
        tracking = SQL("{}.{}").format(Identifier(view.datastore.schema),
                                       Identifier(view.tracking_table_name))
        self.position = as_bytes(SQL("SELECT MAX(notification_id) AS n FROM {} "
                                     "WHERE application_name = %s").format(tracking))
        self.rows = as_bytes(SQL("SELECT * FROM {} WHERE {} = ANY(%s)").format(
            view.table_sql, Identifier(s.key)))
        self.upsert = as_bytes(SQL(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
            view.table_sql, names, SQL(", ").join([SQL("%s")] * len(s.columns)),
            Identifier(s.key),
            SQL(", ").join(SQL("{0} = EXCLUDED.{0}").format(Identifier(n))
                           for n in s.names[1:])))
        self.tracking = as_bytes(view.insert_tracking_statement)


class InlineProjection:
    """One view, written by the recorder of one application in its insert transaction."""

    def __init__(self, view: Any, application_name: str, topics: Sequence[str],
                 decoder: FastDecoder) -> None:
        self.view, self.application_name = view, application_name
        self.topics = frozenset(topics)
        self.decode = decoder
        self.applied = 0  # events folded in by edits (tests compare it with catch-up's count)
        self.deferred = 0  # transactions that left their events to catch-up
        self._local = threading.local()
        self._pg: _PgStatements | None = None

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[str, Row]]:
        """The rows this thread's saves write while the block runs, by key: a command answers
        with the row it committed instead of reading the view again."""
        rows: dict[str, Row] = {}
        previous = getattr(self._local, "rows", None)
        self._local.rows = rows
        try:
            yield rows
        finally:
            self._local.rows = previous

    def write(self, recorder: Any, cursor: Any, stored: Sequence[StoredEvent],
              notification_ids: Sequence[int]) -> bool:
        """Fold the saved events into the view on the insert's cursor (SQLite); False if the
        view is behind (catch-up will apply them). Errors propagate: the insert rolls back."""
        if not notification_ids:
            return False
        cursor.execute("SELECT MAX(notification_id) FROM tracking "
                       "WHERE application_name = ?", (self.application_name,))
        position = cursor.fetchone()[0]
        if not self._applicable(recorder, cursor, position, notification_ids[0]):
            return False
        items = self._items(stored, notification_ids)
        if not items:  # nothing for this view
            return False
        rows = self.view.write_items(cursor, self.application_name, items,
                                     position=notification_ids[-1])
        self._written(items, rows)
        return True

    def read_postgres(self, conn: Any, stored: Sequence[StoredEvent]) -> PendingReads:
        """Queue, in the insert's pipeline and after the events' INSERT, the position lock and
        the reads the fold needs; their results come with the insert's own round trip."""
        statements = self._statements()
        locked, position, rows = conn.cursor(), conn.cursor(), conn.cursor()
        # Try, never wait: a rebuild holds the lock for seconds (while this transaction holds
        # the events table), and this edit's events are then applied by catch-up instead.
        locked.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked",
                       (self.view.position_lock(self.application_name),), prepare=True)
        position.execute(statements.position, (self.application_name,), prepare=True)
        keys = sorted({str(s.originator_id) for s in stored if s.topic in self.topics})
        rows.execute(statements.rows, (keys,), prepare=True)
        return PendingReads(locked, position, rows)

    def write_postgres(self, recorder: Any, conn: Any, reads: PendingReads,
                       stored: Sequence[StoredEvent], notification_ids: Sequence[int]) -> bool:
        """Fold the saved events into the rows read by `read_postgres` and queue the upserts
        and the position; they are sent with the COMMIT (no round trip of their own)."""
        locked = reads.locked.fetchone()
        row = reads.position.fetchone()
        position = row["n"] if row else None
        s = self.view.schema
        loaded = {r[s.key]: s.load(r) for r in reads.rows.fetchall()}
        reads.close()
        if not notification_ids:
            return False
        if not (locked and locked["locked"]):  # a rebuild or a catch-up batch is writing
            self.deferred += 1
            return False
        with conn.cursor() as cursor:
            if not self._applicable(recorder, cursor, position, notification_ids[0]):
                return False
            items = self._items(stored, notification_ids)
            if not items:
                return False
            changed = fold_batch(loaded, items, s.fold, s.key_of)
            statements = self._statements()
            for r in changed.values():  # not executemany: it would sync (a round trip)
                cursor.execute(statements.upsert, s.values(r), prepare=True)
            # The library's statement (single- or multi-row tracking); its RETURNING row is
            # not fetched: under the position lock the position can only move forward.
            cursor.execute(statements.tracking,
                           {"application_name": self.application_name,
                            "notification_id": notification_ids[-1]}, prepare=True)
        self._written(items, changed)
        return True

    def _applicable(self, recorder: Any, cursor: Any, position: int | None, first: int) -> bool:
        if (position or 0) < first and self._in_step(recorder, cursor, position or 0, first):
            return True
        self.deferred += 1
        return False

    def _items(self, stored: Sequence[StoredEvent], notification_ids: Sequence[int]
               ) -> list[tuple[Any, int]]:
        return [(self.decode(s), nid) for s, nid in zip(stored, notification_ids, strict=True)
                if s.topic in self.topics]

    def _written(self, items: Sequence[tuple[Any, int]], rows: dict[str, Row]) -> None:
        self.applied += len(items)
        captured = getattr(self._local, "rows", None)
        if captured is not None:
            captured.update(rows)

    def _statements(self) -> _PgStatements:
        if self._pg is None:
            self._pg = _PgStatements(self.view)
        return self._pg

    def _in_step(self, recorder: Any, cursor: Any, position: int, first: int) -> bool:
        """No event for this view between the position and `first` (ids are usually
        contiguous; a rolled-back insert leaves a gap on PostgreSQL, rowids never do)."""
        if position == first - 1:
            return True
        topics = sorted(self.topics)
        if self.view.dialect == "postgres":
            from psycopg.sql import SQL, Identifier

            cursor.execute(SQL(
                "SELECT EXISTS (SELECT 1 FROM {}.{} WHERE notification_id > %s "
                "AND notification_id < %s AND topic = ANY(%s)) AS behind").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)),
                (position, first, topics))
            row = cursor.fetchone()
            return not row["behind"]
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {recorder.events_table_name} WHERE rowid > ? "
            f"AND rowid < ? AND topic IN ({','.join('?' * len(topics))}))",
            (position, first, *topics))
        return not cursor.fetchone()[0]
