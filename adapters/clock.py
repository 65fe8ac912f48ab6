"""The one wall clock of the adapters: every event's `at` comes from here.

Event bodies never read a clock (they run again on replay); the code that records an event
reads this one and passes the time in. It sits below every other adapter package, so the
orchestrator, publishing, alloy import and the fleet can all share it without importing each
other.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """Now, in UTC, as ISO 8601 with microseconds (the form every event's `at` is stored in)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
