"""How recipe events change a view row. Pure: the same code serves catch-up and rebuild."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from foundry.domain.recipe import Recipe

Row = dict[str, Any]

TOPICS = (
    Recipe.Created.TOPIC,
    Recipe.Forked.TOPIC,
    Recipe.Edited.TOPIC,
    Recipe.VersionPinned.TOPIC,
    Recipe.Archived.TOPIC,
)

# Fields of the row exposed to queries besides the authored document.
META_FIELDS = ("revision", "archived", "createdAt", "updatedAt", "pinnedVersions")


def fold(row: Row | None, event: Any) -> Row:
    """The row after `event`. `row` is None only before a creation event."""
    when = _iso(event.timestamp)
    if isinstance(event, Recipe.Created):  # Forked is a Created
        data = dict(event.data)
        if event.parent_recipe_id is not None:
            data["parentRecipeId"] = event.parent_recipe_id
        return _with_columns({
            "id": str(event.originator_id), "doc": data, "revision": event.originator_version,
            "archived": False, "created_at": when, "updated_at": when, "pinned": [],
        })
    assert row is not None, f"event {type(event).__name__} before creation"
    row = {**row, "revision": event.originator_version, "updated_at": when}
    if isinstance(event, Recipe.Edited):
        doc = dict(row["doc"])
        for change in event.changes:
            if change["new"] is None:
                doc.pop(change["field"], None)
            else:
                doc[change["field"]] = change["new"]
        row["doc"] = doc
    elif isinstance(event, Recipe.VersionPinned):
        if event.version not in row["pinned"]:
            row["pinned"] = [*row["pinned"], event.version]
    elif isinstance(event, Recipe.Archived):
        row["archived"] = True
    return _with_columns(row)


def _with_columns(row: Row) -> Row:
    """Copy the promoted fields out of the document into their columns."""
    doc = row["doc"]
    return {
        **row, "name": doc.get("name"), "version": doc.get("version"),
        "author": doc.get("author"), "license": doc.get("license"),
        "base_model": (doc.get("source") or {}).get("baseModel"),
    }


def to_item(row: Row) -> dict[str, Any]:
    """The wire form of a row: the authored document plus read-only metadata."""
    return {
        **row["doc"],
        "revision": row["revision"],
        "archived": bool(row["archived"]),
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "pinnedVersions": list(row["pinned"]),
    }


def _iso(value: datetime | str) -> str:
    # Fixed width, so that ISO strings sort like the instants they name (SQLite compares text).
    return value if isinstance(value, str) else value.isoformat(timespec="microseconds")
