"""Recipe names are unique among live (not archived) recipes, as Continuum's entity makes them.

The rule is checked where it cannot race: by the recipe recorder, inside the transaction that
records the events which give a recipe its name, after that transaction holds the lock that
orders every recipe write (SQLite: the database's write lock; PostgreSQL: the library's
EXCLUSIVE lock on the events table), against the recipe view, which the same lock keeps
current (its rows are written in the transactions of their events, projections/inline.py).
Two writers of one name are therefore serialized, and the second sees the first's row.

It is not a unique index on the view: the view must still rebuild from events recorded before
the rule existed, which may hold duplicates. Those are shown as they were recorded: each
recipe keeps its name (the view has no unique constraint), and the rule only applies to the
next write that gives a live recipe a name (so renaming one of two duplicates to a free name,
or archiving one, works; an edit of other fields of such a recipe is not refused, because it
does not claim the name: only creates, forks and edits that change `name` do).

One window remains, on PostgreSQL only: an edit whose view row was deferred to catch-up (a
rebuild or a catch-up batch held the view's position lock at that moment, projections/inline.py)
is not in the view until catch-up applies it, and a claim made before then does not see its
name. On SQLite a rebuild or catch-up holds the database's write lock, so the view is current
whenever a claim can run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# "<name> (2)", "<name> (3)" ...: the suffix that fork and import add to pick a free name.
_SUFFIX = re.compile(r"^(?P<base>.*) \((?P<n>\d{1,6})\)$", re.DOTALL)
MAX_TRIES = 1000


def free_name_candidates(name: str) -> Iterator[str]:
    """`name`, then the next free-name candidates: "x" -> "x (2)", "x (3)", ...; a name that
    already ends in " (n)" counts on from n ("x (2)" -> "x (3)"), so a fork of a fork does not
    become "x (2) (2)"."""
    yield name
    match = _SUFFIX.match(name)
    base, start = (match["base"], int(match["n"]) + 1) if match else (name, 2)
    for n in range(start, start + MAX_TRIES):
        yield f"{base} ({n})"


def holder_sql_sqlite(table: str) -> str:
    """The id of a live recipe other than `?2` named `?1` (the view's name index serves it)."""
    return f"SELECT id FROM {table} WHERE name = ? AND archived = 0 AND id <> ? LIMIT 1"


def holder_sql_postgres(table: str) -> str:
    """As `holder_sql_sqlite`, for a psycopg statement (`table` is already quoted)."""
    return f"SELECT id FROM {table} WHERE name = %s AND NOT archived AND id <> %s LIMIT 1"
