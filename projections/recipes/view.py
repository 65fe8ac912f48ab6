"""The recipe view's tables and queries, for SQLite and PostgreSQL.

Promoted columns make the common filters and orderings index-backed; everything else is
read from the JSON document by `projections.query`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from projections.batching import fold_batch, last_tracking
from projections.query import TableSpec
from projections.recipes.fold import fold

COLUMNS: Mapping[str, tuple[str, str]] = {
    "id": ("id", "text"),
    "name": ("name", "text"),
    "version": ("version", "text"),
    "author": ("author", "text"),
    "license": ("license", "text"),
    "source.baseModel": ("base_model", "text"),
    "revision": ("revision", "int"),
    "archived": ("archived", "bool"),
    # Fixed-width ISO-8601 text on both backends: it sorts like the instants it names.
    "createdAt": ("created_at", "text"),
    "updatedAt": ("updated_at", "text"),
}
INDEXED = ("name", "author", "base_model", "updated_at", "created_at", "version")


def _row_values(row: dict[str, Any]) -> tuple[Any, ...]:
    doc = row["doc"]
    return (
        row["id"], doc.get("name"), doc.get("version"), doc.get("author"), doc.get("license"),
        (doc.get("source") or {}).get("baseModel"), row["revision"], bool(row["archived"]),
        row["created_at"], row["updated_at"], json.dumps(row["pinned"]), json.dumps(doc),
    )


def _row_from_db(rec: Mapping[str, Any]) -> dict[str, Any]:
    def load(v: Any) -> Any:
        return json.loads(v) if isinstance(v, str | bytes) else v

    def iso(v: Any) -> str:
        return v if isinstance(v, str) else v.isoformat(timespec="microseconds")

    return {
        "id": rec["id"], "doc": load(rec["doc"]), "revision": rec["revision"],
        "archived": bool(rec["archived"]), "created_at": iso(rec["created_at"]),
        "updated_at": iso(rec["updated_at"]), "pinned": load(rec["pinned"]),
    }


ROW_COLUMNS = "id, name, version, author, license, base_model, revision, archived, " \
    "created_at, updated_at, pinned, doc"


class RecipeViewSQLite(SQLiteTrackingRecorder):
    """Recipe rows in a SQLite file of their own (the views file)."""

    table = "recipes"
    dialect = "sqlite"

    def construct_create_table_statements(self) -> list[str]:
        stmts = super().construct_create_table_statements()
        stmts.append(
            f"CREATE TABLE IF NOT EXISTS {self.table} (id TEXT PRIMARY KEY, name TEXT, "
            "version TEXT, author TEXT, license TEXT, base_model TEXT, revision INTEGER, "
            "archived INTEGER NOT NULL DEFAULT 0, created_at TEXT, updated_at TEXT, "
            "pinned TEXT NOT NULL DEFAULT '[]', doc TEXT NOT NULL)"
        )
        stmts += [
            f"CREATE INDEX IF NOT EXISTS {self.table}_{c} ON {self.table} (archived, {c}, id)"
            for c in INDEXED
        ]
        return stmts

    @property
    def spec(self) -> TableSpec:
        return TableSpec(table=self.table, doc_column="doc", columns=COLUMNS, key_column="id")

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> None:
        ids = sorted({str(e.originator_id) for e, _ in items})
        with self.datastore.transaction(commit=True) as c:
            marks = ",".join("?" * len(ids))
            c.execute(f"SELECT {ROW_COLUMNS} FROM {self.table} WHERE id IN ({marks})", ids)
            rows = {r["id"]: _row_from_db(r) for r in c.fetchall()}
            changed = fold_batch(rows, items, fold)
            c.executemany(
                f"INSERT OR REPLACE INTO {self.table} ({ROW_COLUMNS}) "
                f"VALUES ({','.join('?' * 12)})",
                [_row_values(r) for r in changed.values()],
            )
            self._insert_tracking(c, last_tracking(application_name, items))

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.table}")
            c.execute("DELETE FROM tracking WHERE application_name = ?", (application_name,))

    def fetch(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, list(params))
            return [_row_from_db(r) for r in c.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, list(params))
            return c.fetchone()[0]


class RecipeViewPostgres(PostgresTrackingRecorder):
    """Recipe rows in the same PostgreSQL database as the events."""

    dialect = "postgres"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = self.tracking_table_name.removesuffix("_tracking") + "_recipes"
        tbl = SQL("{}.{}").format(Identifier(self.datastore.schema), Identifier(self.table))
        self.table_sql = tbl
        self.sql_create_statements.append(
            SQL(
                # COLLATE "C": byte order, the order SQLite uses, so both backends page alike.
                'CREATE TABLE IF NOT EXISTS {} (id text COLLATE "C" PRIMARY KEY, '
                'name text COLLATE "C", version text COLLATE "C", author text COLLATE "C", '
                'license text COLLATE "C", base_model text COLLATE "C", revision bigint, '
                'archived boolean NOT NULL DEFAULT false, created_at text COLLATE "C", '
                'updated_at text COLLATE "C", '
                "pinned jsonb NOT NULL DEFAULT '[]', doc jsonb NOT NULL)"
            ).format(tbl)
        )
        for col in INDEXED:
            self.sql_create_statements.append(
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (archived, {}, id)").format(
                    Identifier(f"{self.table}_{col}"), tbl, Identifier(col)
                )
            )

    @property
    def spec(self) -> TableSpec:
        return TableSpec(
            table=f'"{self.datastore.schema}"."{self.table}"', doc_column="doc",
            columns=COLUMNS, key_column="id",
        )

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> None:
        ids = sorted({str(e.originator_id) for e, _ in items})
        with self.datastore.transaction(commit=True) as curs:
            # The view is rebuildable and its tracking commits with it: an async commit
            # risks only redoing the last batches after a crash, never a double apply.
            curs.execute("SET LOCAL synchronous_commit TO OFF")
            curs.execute(
                SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(SQL(ROW_COLUMNS),
                                                                  self.table_sql), (ids,),
            )
            rows = {r["id"]: _row_from_db(r) for r in curs.fetchall()}
            changed = fold_batch(rows, items, fold)
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ROW_COLUMNS.split(", ")[1:])
            curs.executemany(
                SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}").format(
                    self.table_sql, SQL(ROW_COLUMNS), SQL(", ".join(["%s"] * 12)), SQL(updates)
                ),
                [_row_values(r) for r in changed.values()],
            )
            self._insert_tracking(curs, last_tracking(application_name, items))

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {}").format(self.table_sql))
            curs.execute(
                SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                    Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
                ),
                (application_name,),
            )

    def fetch(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(sql.encode(), list(params))
            return [_row_from_db(r) for r in curs.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(sql.encode(), list(params))
            row = curs.fetchone()
            assert row is not None
            return next(iter(row.values()))
