"""Server-Sent Events read from the event store, never from memory: a run executing in
another process, or on another node, streams the same way. Each stream polls the store
(one keyed read) and sends what is new; a client that reconnects with Last-Event-ID gets
exactly the events after that one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from foundry.adapters.store.forge_runs import ForgeRuns

TERMINAL = frozenset({"Completed", "Failed", "Cancelled"})
# What each event makes of a run's status (domain/run_state.py), for the dashboards' stream.
STATUS_AFTER = {"Requested": "requested", "Queued": "queued", "Dispatched": "dispatched",
                "Started": "running", "Sealed": "sealed", "Completed": "completed",
                "Failed": "failed", "Cancelled": "cancelled"}
_BASE = ("originator_id", "originator_version", "timestamp", "originator_topic")
PAGE = 200


def sse(event_id: int, name: str, data: dict[str, Any]) -> bytes:
    """One SSE message. JSON without indent has no raw newline, so one `data:` line."""
    body = json.dumps(data, default=str, ensure_ascii=False)
    return f"id: {event_id}\nevent: {name}\ndata: {body}\n\n".encode()


def event_fields(event: Any) -> dict[str, Any]:
    return {k: v for k, v in event.__dict__.items() if k not in _BASE}


async def run_events(runs: ForgeRuns, run_id: UUID, after: int, *, poll: float,
                     heartbeat: float, ended: bool) -> AsyncIterator[bytes]:
    """The run's events after version `after`, as they are recorded; ends after the
    terminal one (or at once, when the run had ended and nothing is left to send)."""
    last, beat = after, time.monotonic()
    while True:
        stored = await run_in_threadpool(runs.recorder.select_events, run_id, gt=last,
                                         limit=PAGE)
        for item in stored:
            event: Any = runs.mapper.to_domain_event(item)
            name = type(event).__name__
            last = event.originator_version
            yield sse(last, name, {"runId": str(run_id), "version": last, "event": name,
                                   "recordedAt": event.timestamp.isoformat(),
                                   **event_fields(event)})
            if name in TERMINAL:
                return
        if stored:
            beat = time.monotonic()
            continue
        if ended:
            return
        if time.monotonic() - beat > heartbeat:
            beat = time.monotonic()
            yield b": keep-alive\n\n"  # a comment: proxies keep the connection open
        await asyncio.sleep(poll)


async def all_run_events(runs: ForgeRuns, after: int, *, poll: float,
                         heartbeat: float) -> AsyncIterator[bytes]:
    """Every run's events after notification `after`, compact (no recipe bodies, no stage
    configs): what a dashboard needs to redraw a run's row. Never ends by itself."""
    last, beat = after, time.monotonic()
    while True:
        page = await run_in_threadpool(runs.recorder.select_notifications, last + 1, PAGE)
        for note in page:
            event: Any = runs.mapper.to_domain_event(note)
            name = type(event).__name__
            last = note.id
            yield sse(last, name, _compact(event, name))
        if len(page) == PAGE:
            continue
        if page:
            beat = time.monotonic()
        elif time.monotonic() - beat > heartbeat:
            beat = time.monotonic()
            yield b": keep-alive\n\n"
        await asyncio.sleep(poll)


def _compact(event: Any, name: str) -> dict[str, Any]:
    fields = event_fields(event)
    item: dict[str, Any] = {"runId": str(event.originator_id),
                            "version": event.originator_version, "event": name,
                            "at": fields.get("at"), "recordedAt": event.timestamp.isoformat()}
    if name in STATUS_AFTER:
        item["status"] = STATUS_AFTER[name]
    for key in ("cycle", "index", "stage_type", "fraction", "recipe_id", "hardware_node"):
        if key in fields:
            item[key] = fields[key]
    return item
