"""Events a view cannot apply are set aside, named, and skipped; the view stays current.

A store can hold a row no view can take: a state garbled on disk (it no longer decodes), an
event the fold refuses, a value the view's database rejects (a NUL in a PostgreSQL jsonb,
written before imports were checked; #17 item 8). Catch-up used to stop at such an event for
good: every later event, of every entity, was never projected. Now the host
(`foundry.projections.host`) records the event here instead, with the reason, and moves the
view's position past it in the same transaction; the entity's row keeps what the events before
it made of it, and reading that row names the event (`QuarantinedRecordError`) rather than
showing it as current. `foundry audit events` lists every quarantined event.

What is quarantined is decided by `is_record_fault`: a failure that the same event causes
every time. A failure of the store itself (connection lost, database locked, a concurrent
writer) is not the event's fault: catch-up stops and the next catch-up retries from the same
position, so a passing outage never makes an event look damaged.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import psycopg
from eventsourcing.persistence import DataError, PersistenceError
from eventsourcing.utils import get_topic

from foundry.domain.errors import FoundryError

# Stored reason text at most (a database message can go on to quote the row).
REASON_CHARS = 300


@dataclass(frozen=True)
class Quarantined:
    """One event a view set aside: where it is in the log, whose it is, and why."""

    notification_id: int
    originator_id: str
    version: int
    topic: str
    row_key: str | None  # the view row it belongs to, when that can be told
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"notificationId": self.notification_id, "originatorId": self.originator_id,
                "version": self.version, "topic": self.topic, "rowKey": self.row_key,
                "reason": self.reason}


class QuarantinedRecordError(FoundryError):
    """Raised when a view row is read whose entity has an event the view set aside."""

    # The same code as a damaged event read from the store: the caller's remedy is the same
    # (find the row with `foundry audit events`), and every entrypoint already maps it.
    code = "event_damaged"

    def __init__(self, view: str, key: str, records: list[Quarantined]) -> None:
        self.view, self.key, self.records = view, key, records
        named = "; ".join(f"notification {r.notification_id} (event {r.version} of "
                          f"{r.originator_id}, topic {r.topic[:120]!r}): {r.reason}"
                          for r in records[:5])
        super().__init__(
            f"{view} row {key!r} is not current: the view set aside {len(records)} of its "
            f"events that it cannot apply: {named}; `foundry audit events` lists them")


class EventFaultError(Exception):
    """Raised by a rebuild's bulk path when decoding or folding one event failed (its cause)."""


def is_bulk_fault(error: BaseException) -> bool:
    """True when a rebuild's bulk path failed on an event: decoding or folding it (tagged
    `EventFaultError` where it happened) or the store refusing a value. Any other failure of
    a rebuild (the store, an interruption) is raised: the old view stays."""
    return isinstance(error, EventFaultError | DataError | psycopg.DataError
                      | sqlite3.DataError)


def is_record_fault(error: BaseException) -> bool:
    """True when `error` comes from the event itself, so applying it again fails again.

    Store errors other than a data error (the value cannot be stored) are the store's: lost
    connections, locks, serialization failures, a concurrent writer's IntegrityError. Errors
    raised by decoding or folding (plain Python, no I/O) are the event's.
    """
    if isinstance(error, DataError | psycopg.DataError | sqlite3.DataError):
        return True
    if isinstance(error, PersistenceError | psycopg.Error | sqlite3.Error | OSError):
        return False
    return isinstance(error, Exception) and not isinstance(error, MemoryError)


def reason_of(error: BaseException) -> str:
    """What to store as the reason: the class and the first line of the message, cut short
    (a database's later lines quote the data; a decode error's class is all it says)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"[:REASON_CHARS]


def row_key(key_of: Any, event: Any | None, originator_id: Any) -> str | None:
    """The view row an event belongs to. An event that does not decode is given to `key_of`
    as its originator id alone (both views key rows by it); if that is not enough, None."""
    try:
        return str(key_of(event if event is not None
                          else SimpleNamespace(originator_id=originator_id)))
    except Exception:  # a key_of that needs more than the id: the record is still listed
        return None


def of_event(key_of: Any, event: Any, notification_id: int, error: BaseException
             ) -> Quarantined:
    return Quarantined(notification_id, str(event.originator_id),
                       int(event.originator_version), _topic(event),
                       row_key(key_of, event, event.originator_id), reason_of(error))


def of_stored(key_of: Any, note: Any, error: BaseException) -> Quarantined:
    return Quarantined(int(note.id), str(note.originator_id), int(note.originator_version),
                       str(note.topic), row_key(key_of, None, note.originator_id),
                       reason_of(error))


def _topic(event: Any) -> str:
    return get_topic(type(event))


COLUMNS = ("application_name", "notification_id", "originator_id", "version", "topic",
           "row_key", "reason")


def values(application_name: str, r: Quarantined) -> tuple[Any, ...]:
    return (application_name, r.notification_id, r.originator_id, r.version, r.topic,
            r.row_key, r.reason)


def load(record: Any) -> Quarantined:
    return Quarantined(int(record["notification_id"]), record["originator_id"],
                       int(record["version"]), record["topic"], record["row_key"],
                       record["reason"])
