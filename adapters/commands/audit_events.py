"""audit/events: every stored event of both logs read back, and each one that cannot be.

A store can hold a row no read should have to trip over: a state garbled on disk, a topic that
names no class, or a value no view can hold (a NUL written before imports were checked, #17
item 8). Reads name such a row when they meet it (`event_damaged`, adapters/store/damaged.py);
this audit finds them all up front, in notification order, without stopping at the first.

It also lists every event a view set aside because it could not apply it
(`foundry.projections.quarantine`): such an event may decode (a value the view's database
refuses), so the log scan alone would not name it; the view's row for it is not current.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundry.adapters.commands.registry import CommandSpec
from foundry.domain import commands as c
from foundry.domain.errors import InvalidInputError
from foundry.domain.storable import check_storable

if TYPE_CHECKING:
    from eventsourcing.application import Application

    from foundry.adapters.commands.ports import Call, CommandServices

# Rows per read; the audit holds one page at a time.
PAGE = 500
# Reported rows at most: past this the store needs repair, not a longer list.
MAX_PROBLEMS = 1000
_BASE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def audit_events(_query: c.AuditEvents, services: CommandServices, _call: Call
                 ) -> dict[str, Any]:
    problems: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for log_name, app in (("recipes", services.recipes), ("runs", services.runs)):
        counts[log_name] = _scan(log_name, app, problems)
    shown = problems[:MAX_PROBLEMS]
    set_aside = [{"view": view_name, **r.as_dict()}
                 for view_name, view in (("forge_recipes", services.recipe_view),
                                         ("forge_artifacts", services.artifact_view))
                 for r in view.quarantined()]
    return {"ok": not problems and not set_aside, "events": counts, "problems": shown,
            "problemCount": len(problems), "truncated": len(problems) > len(shown),
            "quarantined": set_aside[:MAX_PROBLEMS], "quarantinedCount": len(set_aside)}


def _scan(log_name: str, app: Application[Any], problems: list[dict[str, Any]]) -> int:
    seen, start = 0, 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=PAGE)
        if not page:
            return seen
        for note in page:
            seen += 1
            problem = _problem(app, note)
            if problem:
                problems.append({"log": log_name, "notificationId": note.id,
                                 "originatorId": str(note.originator_id),
                                 "version": note.originator_version,
                                 "topic": note.topic[:200], "problem": problem})
        start = page[-1].id + 1


def _problem(app: Application[Any], note: Any) -> str | None:
    try:
        event = app.mapper.to_domain_event(note)
    except Exception as e:  # EventDamagedError: its message names the row
        return str(e)
    fields = {k: v for k, v in event.__dict__.items() if k not in _BASE}
    try:
        check_storable(fields, "event")
    except InvalidInputError as e:  # decodes, but no view can hold it
        return f"holds a value no store can keep: {e}"
    return None


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("audit/events", c.AuditEvents, audit_events, "read",
                "read back every stored event of both logs; list each damaged one"),
)
