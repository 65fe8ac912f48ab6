"""The projection host: catch a view up with an application's notification log.

The library's ProjectionRunner needs `subscribe()`, which the SQLite recorder lacks, and it
commits once per event. This host pulls pages with `select_notifications` (no 10-item cap),
folds each page into the view in one transaction with its tracking position, and serves both
backends for catch-up and rebuild. On PostgreSQL, `foundry projections run` uses the
library's ProjectionRunner for live tailing (see `foundry.projections.runner`). A rebuild of a
document view is a bulk load instead (`foundry.projections.replay`, `DocumentView.rebuild`).

An event the view cannot apply (it does not decode, the fold refuses it, the view's database
rejects what it folds to) is set aside with its reason and the position moves past it in the
same transaction, so the view's other rows stay current (`foundry.projections.quarantine`); a
failure of the store itself stops catch-up, which retries from the same position.

`write_inline()` has the application's recorder also write the view in each save's own
transaction (`foundry.projections.inline`); catch-up then finds those events applied already
and only does work for events recorded without it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError

from foundry.projections import quarantine as q
from foundry.projections.batching import BatchView
from foundry.projections.inline import InlineProjection, Row
from foundry.projections.replay import FastDecoder, Item, read_pages

# Events per read during a rebuild (catch-up keeps `batch_size`: one transaction per page).
# 1,000: PostgreSQL sorts a page in memory (work_mem), 5,000 spilled to disk.
REBUILD_PAGE = 1000


@dataclass
class CatchUpStats:
    events: int = 0
    batches: int = 0
    seconds: float = 0.0
    quarantined: int = 0  # events set aside (foundry.projections.quarantine)


class ProjectionHost:
    """Keeps one view in step with one upstream application."""

    def __init__(
        self, app: Application[Any], view: BatchView, topics: Sequence[str], batch_size: int = 1000
    ) -> None:
        self.app, self.view, self.topics, self.batch_size = app, view, tuple(topics), batch_size
        self.inline: InlineProjection | None = None

    def write_inline(self) -> InlineProjection:
        """Write the view in the transaction of every save of the application from now on.

        The application's recorder must have an `inline` hook (adapters.store.persistence)
        and the view must live in the same database as the events (same SQLite file).
        """
        recorder: Any = self.app.recorder
        if not hasattr(recorder, "inline"):
            msg = f"{type(recorder).__name__} cannot write a view in its transactions"
            raise TypeError(msg)
        self.inline = InlineProjection(self.view, self.app.name, self.topics,
                                       FastDecoder(self.app.mapper))
        recorder.inline = self.inline
        return self.inline

    def written_rows(self) -> contextlib.AbstractContextManager[dict[str, Row]]:
        """The view rows this thread's saves write inline while the block runs, by key (empty
        without inline writing, or when the view was behind and catch-up will do it)."""
        if self.inline is None:
            return contextlib.nullcontext({})
        return self.inline.capture()

    @property
    def lag(self) -> int:
        """Notifications not yet seen by the view (counts every topic, so an upper bound)."""
        head = self.app.recorder.max_notification_id() or 0
        return int(head) - (self.view.max_tracking_id(self.app.name) or 0)

    def catch_up(self) -> CatchUpStats:
        """Apply every notification after the view's position; safe to run concurrently."""
        stats, started = CatchUpStats(), time.perf_counter()
        for _ in range(100):  # another process may apply the same page first: re-read, retry
            try:
                self._catch_up(stats)
                break
            except IntegrityError:
                continue
        stats.seconds = time.perf_counter() - started
        return stats

    def _catch_up(self, stats: CatchUpStats) -> None:
        recorder = self.app.recorder
        position = self.view.max_tracking_id(self.app.name) or 0
        while True:
            notes = recorder.select_notifications(
                start=position, limit=self.batch_size, topics=self.topics,
                inclusive_of_start=False,
            )
            if not notes:
                return
            self._apply_page(notes, stats)
            stats.batches += 1
            position = notes[-1].id
            if len(notes) < self.batch_size:
                return

    def _apply_page(self, notes: Sequence[Any], stats: CatchUpStats) -> None:
        """One page in one transaction; a page holding an event the view cannot apply is
        applied an event at a time instead, setting aside each event that fails alone."""
        entries = [self._decode(n) for n in notes]
        if not any(isinstance(e, q.Quarantined) for e in entries):
            try:
                stats.events += self.view.apply_batch(self.app.name, entries)  # type: ignore[arg-type]
            except Exception as error:
                if not q.is_record_fault(error):
                    raise
            else:
                return
        for entry in entries:
            if not isinstance(entry, q.Quarantined):
                try:
                    stats.events += self.view.apply_batch(self.app.name, [entry])
                    continue
                except Exception as error:
                    if not q.is_record_fault(error):
                        raise
                    entry = q.of_event(self._key_of(), entry[0], entry[1], error)
            stats.quarantined += self._view().quarantine(self.app.name, [entry])

    def _decode(self, note: Any) -> Item | q.Quarantined:
        try:
            return (self.app.mapper.to_domain_event(note), note.id)
        except Exception as error:  # decoding is pure: whatever it raises, it raises again
            return q.of_stored(self._key_of(), note, error)

    def _key_of(self) -> Any:
        schema = getattr(self.view, "schema", None)
        return schema.key_of if schema is not None else (lambda e: str(e.originator_id))

    def _view(self) -> Any:
        if not hasattr(self.view, "quarantine"):  # a view that cannot set an event aside
            msg = f"{type(self.view).__name__} cannot set aside an event it cannot apply"
            raise TypeError(msg)
        return self.view

    def rebuild(self) -> CatchUpStats:
        """Replace the view's rows and position with a replay of every event.

        A view with a bulk path (`rebuild(application_name, pages)`, the document views) does
        it in one transaction, decoding with `FastDecoder`; otherwise the rows and position
        are dropped and the view caught up page by page. Events recorded meanwhile are caught
        up after.
        """
        bulk = getattr(self.view, "rebuild", None)
        if bulk is None:
            self.view.reset(self.app.name)
            return self.catch_up()
        stats, started = CatchUpStats(), time.perf_counter()
        decoder = _TaggingDecoder(self.app.mapper)

        def pages() -> Iterator[list[Item]]:
            for items in read_pages(self.app, self.topics, page_size=REBUILD_PAGE,
                                    decoder=decoder):
                stats.batches += 1
                yield items

        try:
            with _gc_paused():
                stats.events = bulk(self.app.name, pages())
        except Exception as error:
            if not q.is_bulk_fault(error):
                raise
            # An event the bulk path cannot apply (nothing of the rebuild was committed): the
            # view is rebuilt by catch-up from empty, which sets aside exactly the events it
            # cannot apply, in log order, the same ones on every rebuild of the same log.
            self.view.reset(self.app.name)
            stats.events = stats.batches = 0
        after = self.catch_up()
        stats.events += after.events
        stats.batches += after.batches
        stats.quarantined += after.quarantined
        stats.seconds = time.perf_counter() - started
        return stats

    def run_forever(self, interval: float = 0.5, stop_after: float | None = None) -> None:
        """Poll and catch up until interrupted (the SQLite host; PostgreSQL may use the
        library's ProjectionRunner instead)."""
        deadline = None if stop_after is None else time.monotonic() + stop_after
        while deadline is None or time.monotonic() < deadline:
            self.catch_up()
            time.sleep(interval)


class _TaggingDecoder(FastDecoder):
    """A rebuild's decoder: an event that cannot be decoded raises `EventFaultError`, which
    tells it from a failure of the read itself."""

    def decode(self, originator_id: Any, originator_version: int, topic: str,
               state: bytes) -> Any:
        try:
            return super().decode(originator_id, originator_version, topic, state)
        except Exception as e:
            raise q.EventFaultError(str(originator_id)) from e


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection during a rebuild.

    A rebuild keeps pages of decoded events and thousands of folded rows alive; each young-
    generation collection (every 700 allocations) and each full one walks them, and that
    tripled the cost of decoding an event (measured 22 -> 125 µs with the library's mapper over
    100k recipes). What a rebuild allocates is acyclic JSON data and events, freed by reference
    counting; other threads' cyclic garbage just waits until the rebuild ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
