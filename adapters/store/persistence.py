"""Recorders that also keep a command-id table and a view, written in the events' transaction.

The library has no idempotency store; its `_insert_events` hook runs inside the insert
transaction and receives the keyword arguments given to `Application.save()`, so a repeated
command id fails atomically with the events (IntegrityError) and nothing is written twice.

A recorder may also carry an `InlineProjection` (attached by bootstrap): after the events are
inserted, and before the commit, it folds them into a view and moves the view's position, on
the same cursor (foundry.projections.inline). Events, command record, view row and position
are then one transaction with one commit; if any of them fails, none of them is written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any, cast

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, as_bytes

from foundry.domain.errors import NameTakenError
from foundry.projections.inline import InlineProjection
from foundry.projections.recipes.names import holder_sql_postgres, holder_sql_sqlite


class SQLiteCommandRecorder(SQLiteApplicationRecorder):
    """SQLite application recorder with a `commands` table (one file per application)."""

    inline: InlineProjection | None = None

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS commands ("
            "command_id TEXT PRIMARY KEY, result TEXT NOT NULL) WITHOUT ROWID",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        command_id = kwargs.get("command_id")
        if command_id:
            c.execute(
                "INSERT INTO commands VALUES (?, ?)",
                (command_id, json.dumps(kwargs.get("command_result") or {})),
            )
        ids = super()._insert_events(c, stored_events, **kwargs)
        if self.inline is not None and ids:
            # After the events' INSERT: this transaction holds the write lock, so no other
            # writer can take the name between the check and the commit.
            self._check_name_claim(c, kwargs.get("name_claim"))
            self.inline.write(self, c, stored_events, ids)
        return ids

    def _check_name_claim(self, c: SQLiteCursor, claim: tuple[str, str] | None) -> None:
        """Refuse (roll back) a save that gives a live recipe a name another live recipe
        holds (foundry.projections.recipes.names)."""
        if claim is None or self.inline is None:
            return
        c.execute(holder_sql_sqlite(self.inline.view.table), claim)
        row = c.fetchone()
        if row is not None:
            raise NameTakenError(claim[0], str(row[0]))

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        """The stored result of an already executed command, or None."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT result FROM commands WHERE command_id = ?", (command_id,))
            row = c.fetchone()
        return None if row is None else dict(json.loads(row[0]))


class PostgresCommandRecorder(PostgresApplicationRecorder):
    """PostgreSQL application recorder with a `<app>_commands` table."""

    inline: InlineProjection | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = self.events_table_name.removesuffix("_events") + "_commands"
        self.commands_table = SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (command_id text PRIMARY KEY, result jsonb NOT NULL)"
            ).format(self.commands_table)
        )
        # The statements of an insert, rendered once: psycopg renders a composed query again on
        # every execute (~0.1 ms each; ten of them were a third of an edit's client CPU).
        self.lock_table_statements = [as_bytes(q) for q in self.lock_table_statements]
        self.insert_events_statement = as_bytes(  # type: ignore[assignment] # rendered
            self.insert_events_statement)
        self._notify_statement = as_bytes(
            SQL("NOTIFY {0}").format(Identifier(self.channel_name)))
        self._name_check_statement: bytes | None = None
        self._insert_command_statement = as_bytes(
            SQL("INSERT INTO {} VALUES (%s, %s)").format(self.commands_table))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert (command row, table lock, events, ids), then the inline view,
        in one transaction and two round trips.

        The first round trip carries BEGIN, the command row, the library's table lock and
        NOTIFY, the events' INSERT, and the view's position lock and reads; the second the
        view's rows, its position and COMMIT. BEGIN/COMMIT are sent as statements because
        `conn.transaction()` in pipeline mode nests two more pipelines, each ending in a
        sync: two more round trips per edit. Any error, in the database or in Python (the
        view's fold), rolls everything back: nothing is committed unless all of it is.
        """
        if self.inline is None or not stored_events:
            return cast("Sequence[int] | None", super().insert_events(stored_events, **kwargs))
        ids: Sequence[int] | None = None
        with self.datastore.get_connection() as conn:
            assert conn.autocommit  # the pool's connections: BEGIN starts the transaction
            try:
                with conn.pipeline() as pipeline, conn.cursor() as curs:
                    curs.execute("BEGIN")
                    self._insert_events(curs, stored_events, **kwargs)
                    with conn.cursor() as events:
                        self._insert_stored_events(events, stored_events, **kwargs)
                        reads = self.inline.read_postgres(conn, stored_events)
                        name_check = self._queue_name_check(conn, kwargs.get("name_claim"))
                        pipeline.sync()  # a duplicate key is an IntegrityError here
                        ids = self._fetch_ids_after_insert_events(events, stored_events)
                    self._refuse_taken_name(name_check, kwargs.get("name_claim"))
                    self.inline.write_postgres(self, conn, reads, stored_events, ids or [])
                    curs.execute("COMMIT")
            except BaseException:
                # After a failed statement the server refuses all but ROLLBACK; after a
                # Python error the transaction is open. Either way: nothing stays.
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
        return ids

    def _queue_name_check(self, conn: Any, claim: tuple[str, str] | None) -> Any:
        """Queue, after the events' INSERT and so under the library's EXCLUSIVE lock on the
        events table, the query for a live recipe other than this one holding the claimed
        name (foundry.projections.recipes.names); None without a claim."""
        if claim is None or self.inline is None:
            return None
        if self._name_check_statement is None:
            self._name_check_statement = as_bytes(
                SQL(holder_sql_postgres("{}")).format(self.inline.view.table_sql))
        cursor = conn.cursor()
        cursor.execute(self._name_check_statement, claim, prepare=True)
        return cursor

    @staticmethod
    def _refuse_taken_name(cursor: Any, claim: tuple[str, str] | None) -> None:
        if cursor is None or claim is None:
            return
        row = cursor.fetchone()
        cursor.close()
        if row is not None:
            raise NameTakenError(claim[0], str(row["id"]))  # the caller rolls back

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],  # noqa: ARG002 - the hook's signature
        **kwargs: Any,
    ) -> None:
        command_id = kwargs.get("command_id")
        if command_id:
            curs.execute(
                self._insert_command_statement,
                (command_id, json.dumps(kwargs.get("command_result") or {})),
                prepare=True,
            )

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self._notify_statement)

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        """The stored result of an already executed command, or None."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT result FROM {} WHERE command_id = %s").format(self.commands_table),
                (command_id,),
            )
            row = curs.fetchone()
        return None if row is None else dict(row["result"])


RECORDER_TOPICS = {
    "sqlite": "foundry.adapters.store.persistence:SQLiteCommandRecorder",
    "postgres": "foundry.adapters.store.persistence:PostgresCommandRecorder",
}
