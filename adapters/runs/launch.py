"""How a requested run gets executed. Chosen by FOUNDRY_DISPATCHER (read by bootstrap):

- `in-process` (the default): `forge/run` executes the run in the calling process, or with
  `wait: false` in a detached worker process on this machine
  (`python -m foundry.adapters.cli.worker`).
- `ray`: `forge/run` only records the request. `foundry dispatcher`, a long-lived reconciler
  on the Ray head (adapters/ray_dispatch.py), submits it to a worker node that matches its
  `hardwareNode`; with `wait: true` the caller follows the run's events until it ends.

Either way an attempt executes under a lease (adapters/lease.py): two attempts of one run
never execute at once, whichever process or node they are on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from uuid import UUID

from foundry.adapters.runs.orchestrator import Orchestrator, ProgressListener, RunOutcome
from foundry.adapters.store.config import ENV_DATABASE_URL
from foundry.adapters.store.lease import RunLease
from foundry.domain.errors import InvalidInputError, RunStateError
from foundry.domain.run_state import State

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices
    from foundry.adapters.settings import Settings
    from foundry.adapters.store.blobs import BlobStore
    from foundry.adapters.store.config import StoreConfig
    from foundry.adapters.store.forge_runs import ForgeRuns
    from foundry.executors.registry import ExecutorRegistry

ENV_DISPATCHER = "FOUNDRY_DISPATCHER"
Result = dict[str, Any]


class RunServices(Protocol):
    """What executing a run needs from the system (bootstrap.Services has it all)."""

    @property
    def config(self) -> StoreConfig: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def runs(self) -> ForgeRuns: ...
    @property
    def registry(self) -> ExecutorRegistry: ...
    @property
    def blobs(self) -> BlobStore: ...
    @property
    def settings(self) -> Settings: ...


def _ignore(_event: dict[str, Any]) -> None:
    """No one draws this call's progress."""


class RunDispatcher(Protocol):
    name: str

    def dispatch(self, services: RunServices, run_id: UUID, *, wait: bool,
                 progress: ProgressListener = _ignore) -> Result:
        """Get the requested (or interrupted) run executed; with `wait`, return once it
        ended, passing every stage event to `progress`. Returns what the caller should add
        to the run summary."""


def execute_leased(foundry: RunServices, run_id: UUID, *, wait_seconds: float,
                   listener: ProgressListener | None = None,
                   node: dict[str, str] | None = None) -> RunOutcome | None:
    """Execute (or resume) the run under its lease; None if another attempt kept the lease
    for `wait_seconds`."""
    with RunLease(foundry.config, foundry.state_dir, run_id) as lease:
        if not lease.acquire(wait_seconds):
            return None
        # Every caller passes bootstrap's Services, which publishing takes too: the
        # recipe's publish stages publish the run once it completes.
        orchestrator = Orchestrator(foundry.runs, foundry.registry, foundry.blobs,
                                    foundry.state_dir, listener=listener, node=node,
                                    publishing=cast("PublishServices", foundry),
                                    signing=foundry.settings.signing,
                                    keys=foundry.settings.keys)
        return orchestrator.execute(run_id)


class InProcessDispatcher:
    """This process (`wait`) or a detached worker process on this machine."""

    name = "in-process"

    def __init__(self, lease_wait_seconds: float = 10.0) -> None:
        # A killed worker's lease is freed when the kernel (SQLite) or the server
        # (PostgreSQL: once it sees the socket close) notices; a resume right after the kill
        # waits that long rather than failing.
        self.lease_wait_seconds = lease_wait_seconds

    def dispatch(self, services: RunServices, run_id: UUID, *, wait: bool,
                 progress: ProgressListener = _ignore) -> Result:
        if not wait:
            return {"detached": True, "workerPid": spawn_worker(services, run_id)}
        outcome = execute_leased(services, run_id, wait_seconds=self.lease_wait_seconds,
                                 listener=progress)
        if outcome is None:
            raise RunStateError(str(run_id), "cannot execute: another attempt holds the "
                                "run's lease (forge/status shows its owner)")
        return {}


def spawn_worker(foundry: RunServices, run_id: UUID) -> int:
    """Start `python -m foundry.adapters.cli.worker RUN_ID` in its own session; it outlives
    this one."""
    log_dir = foundry.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # The store URL goes through the environment, never the command line: a PostgreSQL URL
    # may carry a password, and any local user can read a process's arguments (ps, /proc).
    env = {**os.environ, ENV_DATABASE_URL: foundry.config.url}
    with (log_dir / f"{run_id}.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foundry.adapters.cli.worker", str(run_id),
             "--state-dir", str(foundry.state_dir)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=env,
        )
    return proc.pid


class ClusterDispatcher:
    """Ray: the request is all this side records; `foundry dispatcher` submits it. With
    `wait`, follow the run's events (and feed the progress listener) until it ends."""

    name = "ray"

    def __init__(self, poll_seconds: float = 0.5) -> None:
        self.poll_seconds = poll_seconds

    def dispatch(self, services: RunServices, run_id: UUID, *, wait: bool,
                 progress: ProgressListener = _ignore) -> Result:
        if not wait:
            return {"detached": True}
        follow_run(services, run_id, self.poll_seconds, progress)
        return {}


def follow_run(foundry: RunServices, run_id: UUID, poll_seconds: float,
               listener: ProgressListener = _ignore) -> None:
    """Block until the run ends, passing what changed to the progress listener: why it waits,
    stage starts, progress and completions."""
    seen: dict[str, str] = {}
    progress: dict[str, Any] = {}
    waiting = ""
    while True:
        run = foundry.runs.get_run(run_id)
        reason = waiting_reason(run.state) if run.status == "requested" else waiting
        if reason != waiting:
            waiting = reason
            listener({"kind": "run_waiting", "message": waiting})
        for key, record in sorted(run.state["stages"].items()):
            event: Result = {"cycle": record["cycle"], "index": record["index"],
                             "type": record["type"]}
            status, before = record["status"], seen.get(key)
            seen[key] = status
            if before is None:  # new, even if it started and ended between two polls
                listener({"kind": "stage_started", **event})
            latest = record.get("progress")
            if status == "running" and latest is not None and latest != progress.get(key):
                progress[key] = latest
                listener({"kind": "stage_progress", **event,
                                           "fraction": latest["fraction"],
                                           "message": latest["message"]})
            if status == "completed" and before != "completed":
                listener({"kind": "stage_completed", **event,
                                           "seconds": record.get("seconds"),
                                           "metrics": record.get("metrics", {})})
        if run.ended:
            return
        time.sleep(poll_seconds)


def waiting_reason(state: State) -> str:
    """Why a requested run has not started: what `forge/status` answers while it waits."""
    queue = state.get("queue")
    if queue:
        return f"queued since {queue['at']}: {queue['reason']}"
    if state.get("dispatches"):
        last = state["dispatches"][-1]
        selector = ", ".join(f"{k}={v}" for k, v in last["labelSelector"].items()) or "any"
        return (f"submitted by {last['dispatcher']} at {last['at']}; waiting for a free slot "
                f"on a worker with {selector}")
    return ("requested; not submitted yet (with FOUNDRY_DISPATCHER=ray, `foundry dispatcher`"
            " submits it)")


DISPATCHERS: dict[str, Callable[[], RunDispatcher]] = {
    "in-process": InProcessDispatcher, "ray": ClusterDispatcher}


def dispatcher_named(name: str) -> RunDispatcher:
    """The dispatcher FOUNDRY_DISPATCHER names; an unknown name says which are known."""
    try:
        dispatcher: RunDispatcher = DISPATCHERS[name]()
    except KeyError:
        raise InvalidInputError(
            ENV_DISPATCHER, f"unknown dispatcher {name!r}; known: {', '.join(DISPATCHERS)}"
        ) from None
    return dispatcher
