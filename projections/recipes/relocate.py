"""The recipe view moved from `foundry.views.db` into `foundry.db` (SQLite stores).

An edit writes its recipe view row in the transaction of its events, and SQLite commits a
transaction atomically only within one database file (in WAL mode, not across attached files),
so the view now lives next to the events. A store written before the move still has its
recipe rows in the views file; on open they are not copied but rebuilt from the events (the
events are the truth, and the bulk rebuild runs at over 20,000 events/s), then the old table
and its position are dropped from the views file. The artifact view stays there.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import structlog

from foundry.projections.recipes.view import SCHEMA

log = structlog.get_logger()


def _has_old_view(views_file: Path) -> bool:
    if not views_file.exists():
        return False
    conn = sqlite3.connect(views_file, timeout=30)
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (SCHEMA.name,)).fetchone()
    finally:
        conn.close()
    return found is not None


def move_recipe_view(views_file: Path, host: Any) -> bool:
    """Rebuild the recipe view in the events' file if it was in `views_file`; True if so.

    Safe when two processes open the store at once: each rebuild is one transaction (the
    second waits for the first, then rebuilds again) and the drop is `IF EXISTS`.
    """
    if not _has_old_view(views_file):
        return False
    app_name = host.app.name
    if not host.view.max_tracking_id(app_name) and host.app.recorder.max_notification_id():
        stats = host.rebuild()
        log.info("recipe_view_moved", events=stats.events, seconds=round(stats.seconds, 2),
                 into=str(host.view.datastore.pool.db_name), old=str(views_file))
    conn = sqlite3.connect(views_file, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"DROP TABLE IF EXISTS {SCHEMA.name}")  # its indexes go with it
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'tracking'").fetchone():
            conn.execute("DELETE FROM tracking WHERE application_name = ?", (app_name,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return True
