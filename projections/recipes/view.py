"""The recipe view: promoted, indexed columns for the common filters; the rest is JSON."""

from __future__ import annotations

from foundry.projections.document_view import PostgresDocumentView, SQLiteDocumentView, ViewSchema
from foundry.projections.recipes.fold import fold

SCHEMA = ViewSchema(
    name="recipes",
    columns=(
        ("id", "text"), ("name", "text"), ("version", "text"), ("author", "text"),
        ("license", "text"), ("base_model", "text"), ("revision", "int"), ("archived", "bool"),
        ("created_at", "text"), ("updated_at", "text"), ("pinned", "json"), ("doc", "json"),
    ),
    fold=fold,
    key_of=lambda e: str(e.originator_id),
    query_columns={
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
    },
    indexed=("name", "author", "base_model", "updated_at", "created_at", "version"),
)


class RecipeViewSQLite(SQLiteDocumentView):
    schema = SCHEMA


class RecipeViewPostgres(PostgresDocumentView):
    schema = SCHEMA
