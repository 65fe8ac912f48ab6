"""`foundry dispatcher`: the reconciler that hands runs to a Ray cluster.

One long-lived process on the Ray head. It reads the run events of the shared store (from
the start, then as they arrive) and keeps, in memory, which runs are unfinished. Each step:

1. A cancelled run that has a live task: `ray.cancel(force=True)` (the Cancelled event is
   already in the store; forge/cancel wrote it). Never re-submitted.
2. A task that finished while its run is still unfinished (worker node lost, Ray's retries
   spent, the run's lease held elsewhere): re-submitted after a back-off; after
   `max_resubmits` failed tasks the run is recorded as Failed with the last error.
3. An unfinished run with no live task of this dispatcher (new, or left by a dispatcher that
   died: Ray kills the tasks a dead driver owned): placed (adapters/placement.py) and
   submitted, and `Dispatched` is recorded; if no live worker can take it, `Queued` is
   recorded with the reason and it is tried again on the next step.

A worker process that crashes mid-stage is Ray's business: the task is retried
(`max_retries`), and the retry resumes the run (completed stages are kept). The run lease
(adapters/lease.py) makes a retry or a re-submission wait while an older attempt still runs.

Ray is imported here and only here: it is the optional `ray` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import ray
import structlog

from foundry.adapters.clock import utc_now
from foundry.adapters.fleet.placement import CLASS_LABEL, SITE_LABEL, ClusterNode, place
from foundry.adapters.publishing.alloy_io import IMPORTED_NODE
from foundry.domain.errors import RunEndedError
from foundry.domain.forge_run import ForgeRun

if TYPE_CHECKING:
    from foundry.adapters.bootstrap import Foundry

log = structlog.get_logger()

# Settings a test or benchmark gives the dispatcher for its tasks (the fake executors). On a
# fleet, each node's own environment decides (docs/deploy.md); nothing secret is forwarded.
# FOUNDRY_SIGNING too: a dispatcher told to sign only with existing keys (or never) does not
# let its tasks create keys on the nodes.
FORWARDED_ENV = ("FOUNDRY_EXECUTORS", "FOUNDRY_FAKE_SLEEP", "FOUNDRY_FAKE_FAIL_ON",
                 "FOUNDRY_FAKE_MODELS", "FOUNDRY_SIGNING")
_TOPICS = tuple(t.TOPIC for t in (ForgeRun.Requested, ForgeRun.Completed, ForgeRun.Failed,
                                  ForgeRun.Cancelled, ForgeRun.Imported))
_ENDED = (ForgeRun.Completed, ForgeRun.Failed, ForgeRun.Imported)


def execute_run(database_url: str, run_id: str, state_dir: str,
                lease_wait_seconds: float) -> dict[str, Any]:
    """The Ray task: execute (or resume) one run on the node Ray chose.

    `database_url` carries no password (PGPASSWORD on the node supplies it). The node's
    FOUNDRY_STATE_DIR, where set, wins over the dispatcher's `state_dir`: a shared blob
    directory may be mounted at different paths on different nodes.
    """
    from foundry.adapters.bootstrap import ENV_STATE_DIR, Foundry
    from foundry.adapters.runs.launch import execute_leased

    node_state_dir = os.environ.get(ENV_STATE_DIR)
    context = ray.get_runtime_context()
    node_id, labels = context.get_node_id(), context.get_node_labels()
    node = {"rayNodeId": str(node_id), "class": str(labels.get(CLASS_LABEL, "")),
            "site": str(labels.get(SITE_LABEL, ""))}
    with Foundry.open(database_url, state_dir=Path(node_state_dir or state_dir),
                      create_tables=False) as foundry:
        outcome = execute_leased(foundry, UUID(run_id), wait_seconds=lease_wait_seconds,
                                 node=node)
    if outcome is None:
        return {"runId": run_id, "status": "lease-held-elsewhere", "nodeId": node_id}
    return {"runId": run_id, "status": outcome.status, "nodeId": node_id,
            "error": outcome.error}


_remote_execute_run = ray.remote(execute_run)


@dataclass
class TrackedRun:
    run_id: UUID
    hardware_node: str
    min_vram_gb: float | None
    ended: bool = False
    cancelled: bool = False
    ref: Any = None  # the live task's ObjectRef
    failures: int = 0
    lease_waits: int = 0
    not_before: float = 0.0
    last_error: str = ""


class Reconciler:
    """Keeps every unfinished run of one store submitted to one Ray cluster."""

    def __init__(self, foundry: Foundry, *, poll_seconds: float = 0.5,
                 lease_wait_seconds: float = 60.0, max_retries: int = 3,
                 max_resubmits: int = 5, task_env: dict[str, str] | None = None) -> None:
        self.foundry = foundry
        self.poll_seconds, self.lease_wait_seconds = poll_seconds, lease_wait_seconds
        self.max_retries, self.max_resubmits = max_retries, max_resubmits
        self.task_env = ({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
                         if task_env is None else task_env)
        self.name = f"dispatcher@{socket.gethostname()}:{os.getpid()}"
        self.runs: dict[UUID, TrackedRun] = {}
        self._position = 0

    # --- the loop ------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event | None = None,
                    stop_after: float | None = None) -> None:
        stop = stop or threading.Event()
        deadline = None if stop_after is None else time.monotonic() + stop_after
        log.info("dispatcher_started", name=self.name, store=self.foundry.config.display_url)
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                self.step()
            except Exception:
                # A database or Ray hiccup must not end the dispatcher: log, wait, go on.
                log.exception("dispatcher_step_failed")
            stop.wait(self.poll_seconds)

    def step(self) -> None:
        self._read_events()
        self._cancel_ended()
        self._collect_finished()
        self._submit_unfinished()

    # --- 0. what the store says ----------------------------------------------------------

    def _read_events(self) -> None:
        recorder = self.foundry.runs.recorder
        while True:
            notes = recorder.select_notifications(start=self._position + 1, limit=1000,
                                                  topics=_TOPICS)
            for note in notes:
                self._position = note.id
                self._apply(self.foundry.runs.mapper.to_domain_event(note))
            if len(notes) < 1000:
                return

    def _apply(self, event: Any) -> None:
        run_id = event.originator_id
        if isinstance(event, ForgeRun.Requested):
            if event.hardware_node == IMPORTED_NODE:
                return  # recorded by import-alloy, ended by its next event: nothing to run
            hardware = (event.recipe.get("hardware") or {})
            vram = hardware.get("minVramGb")
            self.runs[run_id] = TrackedRun(run_id, event.hardware_node,
                                           float(vram) if vram else None)
            return
        tracked = self.runs.get(run_id)
        if tracked is None:
            return
        tracked.ended = True
        tracked.cancelled = isinstance(event, ForgeRun.Cancelled)
        if isinstance(event, _ENDED) and tracked.ref is None:
            del self.runs[run_id]  # nothing of ours runs it: forget it

    # --- 1. cancellations ----------------------------------------------------------------

    def _cancel_ended(self) -> None:
        for tracked in list(self.runs.values()):
            if tracked.cancelled and tracked.ref is not None:
                log.info("cancelling_task", run_id=str(tracked.run_id))
                with contextlib.suppress(Exception):  # the task may have just finished
                    ray.cancel(tracked.ref, force=True)
                tracked.ref = None
            if tracked.ended and tracked.ref is None:
                del self.runs[tracked.run_id]

    # --- 2. finished tasks ---------------------------------------------------------------

    def _collect_finished(self) -> None:
        live = {t.ref: t for t in self.runs.values() if t.ref is not None}
        if not live:
            return
        ready, _ = ray.wait(list(live), num_returns=len(live), timeout=0)
        for ref in ready:
            tracked = live[ref]
            tracked.ref = None
            try:
                result = ray.get(ref)
                error = f"task ended with the run {result['status']}"
                leased = result["status"] == "lease-held-elsewhere"
            except Exception as e:  # a crashed node, spent retries: Ray says which
                result, error, leased = None, f"{type(e).__name__}: {e}"[:2000], False
            run = self.foundry.runs.get_run(tracked.run_id)
            if run.ended:
                del self.runs[tracked.run_id]
                log.info("run_finished", run_id=str(tracked.run_id), status=run.status)
                continue
            self._retry_later(tracked, error, count=not leased)

    def _retry_later(self, tracked: TrackedRun, error: str, *, count: bool) -> None:
        tracked.last_error = error
        if count:
            tracked.failures += 1
        else:
            # Another attempt holds the lease (one this dispatcher does not own): never a
            # reason to give up, but each wait holds a slot, so wait longer each time.
            tracked.lease_waits += 1
        if tracked.failures >= self.max_resubmits:
            message = (f"the dispatcher gave up after {tracked.failures} tasks; last: "
                       f"{error}")
            with contextlib.suppress(RunEndedError):
                self.foundry.runs.record(tracked.run_id, lambda r: r.fail(
                    error_type="DispatchError", message=message, at=utc_now()))
            log.error("run_abandoned", run_id=str(tracked.run_id), error=error)
            del self.runs[tracked.run_id]
            return
        delay = min(60.0, 2.0 ** (tracked.failures + tracked.lease_waits))
        tracked.not_before = time.monotonic() + delay
        log.warning("run_resubmit_scheduled", run_id=str(tracked.run_id), error=error,
                    in_seconds=delay)

    # --- 3. submissions ------------------------------------------------------------------

    def _submit_unfinished(self) -> None:
        waiting = [t for t in self.runs.values()
                   if not t.ended and t.ref is None and time.monotonic() >= t.not_before]
        if not waiting:
            return
        nodes = [ClusterNode.from_ray(n) for n in ray.nodes()]  # type: ignore[no-untyped-call]
        for tracked in waiting:
            try:
                placement = place(tracked.hardware_node, tracked.min_vram_gb, nodes)
                if isinstance(placement, str):
                    self._queue(tracked, placement)
                    continue
                self._submit(tracked, placement.label_selector, placement.resources,
                             placement.num_gpus, placement.as_event_resources())
            except Exception as e:
                # One run's trouble (a hardwareNode recorded before the grammar tightened, a
                # Ray error on submit) must not hold up the others: it is retried later.
                log.exception("run_not_submitted", run_id=str(tracked.run_id))
                self._retry_later(tracked, f"{type(e).__name__}: {e}", count=True)

    def _queue(self, tracked: TrackedRun, reason: str) -> None:
        def queue(run: ForgeRun) -> bool:
            return run.queue(reason=reason, at=utc_now())

        with contextlib.suppress(RunEndedError):
            if self.foundry.runs.record(tracked.run_id, queue):
                log.info("run_queued", run_id=str(tracked.run_id), reason=reason)

    def _submit(self, tracked: TrackedRun, selector: dict[str, str],
                resources: dict[str, float], num_gpus: float,
                recorded: dict[str, float]) -> None:
        options: dict[str, Any] = {
            "num_cpus": 0, "num_gpus": num_gpus, "resources": resources,
            "label_selector": selector, "max_retries": self.max_retries,
            "retry_exceptions": False, "name": f"forge-run-{tracked.run_id}",
        }
        if self.task_env:
            options["runtime_env"] = {"env_vars": dict(self.task_env)}
        tracked.ref = _remote_execute_run.options(**options).remote(
            self.foundry.config.url_without_password, str(tracked.run_id),
            str(self.foundry.state_dir),
            self.lease_wait_seconds)
        try:
            self.foundry.runs.record(tracked.run_id, lambda r: r.dispatch(
                dispatcher=self.name, label_selector=selector, resources=recorded,
                at=utc_now()))
        except RunEndedError:
            return  # cancelled in between: the next step cancels the task
        log.info("run_submitted", run_id=str(tracked.run_id), selector=selector,
                 resources=recorded)


def connect(address: str | None) -> None:
    """Join the Ray cluster as a driver (RAY_ADDRESS, else the local head)."""
    if ray.is_initialized():
        return
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto",
             namespace="foundry", log_to_driver=False, logging_level=logging.WARNING)
