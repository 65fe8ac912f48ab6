"""Recorders that also keep a command-id table, written in the same transaction as the events.

The library has no idempotency store; its `_insert_events` hook runs inside the insert
transaction and receives the keyword arguments given to `Application.save()`, so a repeated
command id fails atomically with the events (IntegrityError) and nothing is written twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


class SQLiteCommandRecorder(SQLiteApplicationRecorder):
    """SQLite application recorder with a `commands` table (one file per application)."""

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
        return super()._insert_events(c, stored_events, **kwargs)

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        """The stored result of an already executed command, or None."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT result FROM commands WHERE command_id = ?", (command_id,))
            row = c.fetchone()
        return None if row is None else dict(json.loads(row[0]))


class PostgresCommandRecorder(PostgresApplicationRecorder):
    """PostgreSQL application recorder with a `<app>_commands` table."""

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

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],  # noqa: ARG002 - the hook's signature
        **kwargs: Any,
    ) -> None:
        command_id = kwargs.get("command_id")
        if command_id:
            curs.execute(
                SQL("INSERT INTO {} VALUES (%s, %s)").format(self.commands_table),
                (command_id, json.dumps(kwargs.get("command_result") or {})),
            )

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
