"""Applying a batch of events to a view in one transaction, with one tracking position.

The library's views write tracking per event; a rebuild of 100k events would then commit
100k times. Here a batch is folded in memory and written with one tracking row, in the same
transaction, so exactly-once still holds: under the view's write lock, only the events after
the recorded position are applied (see `document_view.unapplied`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from eventsourcing.persistence import Tracking

Row = dict[str, Any]
Fold = Callable[[Row | None, Any], Row]


class BatchView(Protocol):
    """What a host needs from a view."""

    def apply_batch(self, application_name: str, items: Sequence[tuple[Any, int]]) -> int: ...

    def max_tracking_id(self, application_name: str) -> int | None: ...

    def reset(self, application_name: str) -> None: ...


def fold_batch(
    rows: dict[str, Row],
    items: Sequence[tuple[Any, int]],
    fold: Fold,
    key_of: Callable[[Any], str] = lambda e: str(e.originator_id),
) -> dict[str, Row]:
    """Fold events into the loaded rows; returns only the rows that changed."""
    changed: dict[str, Row] = {}
    for event, _ in items:
        key = key_of(event)
        current = changed.get(key, rows.get(key))
        changed[key] = fold(current, event)
    return changed


def last_tracking(application_name: str, items: Sequence[tuple[Any, int]]) -> Tracking:
    return Tracking(application_name=application_name, notification_id=items[-1][1])
