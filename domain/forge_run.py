"""The ForgeRun aggregate: every step of a forge is an event, checked before it is recorded.

Timestamps are arguments (`at`): an event body never reads a clock, so a replay yields the
same state. The state itself lives in `foundry.domain.run_state`, shared with the artifact view.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from foundry.domain import run_state
from foundry.domain.errors import (
    RunEndedError,
    RunStateError,
    StageAlreadyCompletedError,
    StageNotStartedError,
)


class ForgeRun(Aggregate):
    """One execution of one pinned recipe version on one hardware node."""

    TOPIC = "foundry.ForgeRun"

    class Created(Aggregate.Created):  # the library's default creation event; unused
        TOPIC = "foundry.ForgeRun.Created"

    class Requested(Aggregate.Created):
        TOPIC = "foundry.ForgeRun.Requested"
        recipe_id: str
        recipe_version: str
        recipe_revision: int
        recipe_hash: str
        recipe: dict[str, Any]
        hardware_node: str
        publish_target: str | None
        requested_by: str
        command_id: str | None
        at: str
        reuse: bool  # may a stage take a completed stage's outputs by fingerprint (#14)

    @event(Requested)
    def __init__(
        self, recipe_id: str, recipe_version: str, recipe_revision: int, recipe_hash: str,
        recipe: dict[str, Any], hardware_node: str, publish_target: str | None,
        requested_by: str, command_id: str | None, at: str, reuse: bool = True,
    ) -> None:
        self.state = run_state.initial({
            "run_id": str(self.id), "recipe_id": recipe_id, "recipe_version": recipe_version,
            "recipe_revision": recipe_revision, "recipe_hash": recipe_hash, "recipe": recipe,
            "hardware_node": hardware_node, "publish_target": publish_target,
            "requested_by": requested_by, "command_id": command_id, "at": at, "reuse": reuse,
        })

    @classmethod
    def request(cls, *, id: UUID, **fields: Any) -> ForgeRun:
        fields.setdefault("reuse", True)  # the event needs every field; callers may omit it
        return cls._create(cls.Requested, id=id, **fields)

    def __deepcopy__(self, memo: dict[int, Any]) -> ForgeRun:
        """The repository copies an aggregate out of its cache on every get. `state` is never
        changed in place (run_state.apply is copy-on-write), so the copy shares it: a get
        costs the same for a run of 500 stages as for one of 5."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__["_pending_events"] = list(self.__dict__.get("_pending_events", []))
        return new

    # --- queries -------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return str(self.state["status"])

    @property
    def ended(self) -> bool:
        return self.status in run_state.ENDED

    def stage(self, cycle: int, index: int) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.state["stages"].get(run_state.stage_key(cycle, index))
        return record

    # --- guards --------------------------------------------------------------------------

    def _not_ended(self, what: str) -> None:
        if self.ended:
            raise RunEndedError(str(self.id), f"cannot {what}: the run is {self.status}")

    def _running(self, what: str) -> None:
        self._not_ended(what)
        if self.status != "running":
            raise RunStateError(str(self.id), f"cannot {what}: the run is {self.status}")

    def _open_stage(self, cycle: int, index: int, what: str) -> None:
        self._running(what)
        record = self.stage(cycle, index)
        if record is None:
            raise StageNotStartedError(str(self.id), f"cannot {what}: stage {cycle}:{index} "
                                       "never started")
        if record["status"] != "running":
            raise StageAlreadyCompletedError(
                str(self.id), f"cannot {what}: stage {cycle}:{index} is {record['status']}")

    # --- commands ------------------------------------------------------------------------

    def start(self, *, worker_host: str, pid: int, software: dict[str, str], device: str,
              at: str, node: dict[str, str] | None = None) -> int:
        """A worker takes the run (first start or a resume); returns the attempt number."""
        self._not_ended("start")
        if self.status == "sealed":
            raise RunStateError(str(self.id), "cannot start: the run is already sealed")
        attempt = run_state.current_attempt(self.state) + 1
        self.trigger_event(
            self.Started, attempt=attempt, worker_host=worker_host, pid=pid, software=software,
            device=device, at=at, node=node)
        return attempt

    def queue(self, *, reason: str, at: str) -> bool:
        """Say why a run waits to be dispatched (no worker offers its node class, say): a
        new run, or an interrupted one whose node is gone. Recorded only when the reason
        changes; True when recorded. Started and Dispatched clear it."""
        self._not_ended("queue")
        current = self.state.get("queue")
        if current is not None and current["reason"] == reason:
            return False
        self.trigger_event(self.Queued, reason=reason, at=at)
        return True

    def dispatch(self, *, dispatcher: str, label_selector: dict[str, str],
                 resources: dict[str, float], at: str) -> int:
        """A dispatcher handed the run to a cluster; returns the dispatch number."""
        self._not_ended("dispatch")
        number = len(self.state.get("dispatches", [])) + 1
        self.trigger_event(
            self.Dispatched, dispatcher=dispatcher, label_selector=label_selector,
            resources=resources, at=at)
        return number

    def resolve_source(self, *, base_model: str, source_hash: str,
                       files: list[dict[str, Any]], at: str) -> None:
        self._running("resolve the source")
        self.trigger_event(
            self.SourceResolved, base_model=base_model, source_hash=source_hash, files=files, at=at)

    def start_stage(self, *, cycle: int, index: int, stage_type: str, config: dict[str, Any],
                    input_hash: str, at: str, fingerprint: str | None = None) -> None:
        self._running("start a stage")
        record = self.stage(cycle, index)
        attempt = run_state.current_attempt(self.state)
        if record is not None:
            if record["status"] == "completed":
                raise StageAlreadyCompletedError(
                    str(self.id), f"stage {cycle}:{index} already completed")
            if record["status"] == "running" and record["attempt"] == attempt:
                raise RunStateError(str(self.id), f"stage {cycle}:{index} is already running")
        self.trigger_event(
            self.StageStarted, cycle=cycle, index=index, stage_type=stage_type, config=config,
            input_hash=input_hash, attempt=attempt, at=at, fingerprint=fingerprint)

    def reuse_stage(self, *, cycle: int, index: int, stage_type: str, config: dict[str, Any],
                    input_hash: str, fingerprint: str, reused_from: dict[str, Any],
                    output_hash: str, files: list[dict[str, Any]], metrics: dict[str, Any],
                    notes: list[str], at: str) -> None:
        """The stage completes with a completed stage's verified outputs (same fingerprint):
        `reused_from` names that run, cycle, index and stage type."""
        self._running("reuse a stage")
        record = self.stage(cycle, index)
        if record is not None and record["status"] == "completed":
            raise StageAlreadyCompletedError(
                str(self.id), f"stage {cycle}:{index} already completed")
        self.trigger_event(
            self.StageReused, cycle=cycle, index=index, stage_type=stage_type, config=config,
            input_hash=input_hash, fingerprint=fingerprint, reused_from=reused_from,
            output_hash=output_hash, files=files, metrics=metrics, notes=notes,
            attempt=run_state.current_attempt(self.state), at=at)

    def report_progress(self, *, cycle: int, index: int, fraction: float, message: str,
                        at: str) -> None:
        self._open_stage(cycle, index, "report progress")
        self.trigger_event(
            self.StageProgressed, cycle=cycle, index=index, fraction=fraction, message=message,
            at=at)

    def complete_stage(self, *, cycle: int, index: int, output_hash: str,
                       files: list[dict[str, Any]], metrics: dict[str, Any],
                       notes: list[str], seconds: float, at: str) -> None:
        self._open_stage(cycle, index, "complete a stage")
        self.trigger_event(
            self.StageCompleted, cycle=cycle, index=index, output_hash=output_hash, files=files,
            metrics=metrics, notes=notes, seconds=seconds, at=at)

    def fail_stage(self, *, cycle: int, index: int, error_type: str, message: str,
                   at: str) -> None:
        self._open_stage(cycle, index, "fail a stage")
        self.trigger_event(
            self.StageFailed, cycle=cycle, index=index, error_type=error_type, message=message,
            at=at)

    def record_benchmarks(self, *, benchmarks: list[dict[str, Any]], at: str) -> None:
        self._running("record benchmarks")
        self.trigger_event(self.BenchmarksRecorded, benchmarks=benchmarks, at=at)

    def evaluate_gate(self, *, passed: bool, reasons: list[str], at: str) -> None:
        self._running("evaluate the gate")
        self.trigger_event(self.GateEvaluated, passed=passed, reasons=reasons, at=at)

    def seal(self, *, alloy_hash: str, at: str) -> None:
        self._running("seal")
        if self.state["gate"] is None:
            raise RunStateError(str(self.id), "cannot seal before the gate is evaluated")
        self.trigger_event(self.Sealed, alloy_hash=alloy_hash, at=at)

    def complete(self, *, at: str) -> None:
        self._not_ended("complete")
        if self.status != "sealed":
            raise RunStateError(str(self.id), f"cannot complete: the run is {self.status}")
        self.trigger_event(self.Completed, at=at)

    def fail(self, *, error_type: str, message: str, at: str) -> None:
        self._not_ended("fail")
        self.trigger_event(self.Failed, error_type=error_type, message=message, at=at)

    def cancel(self, *, by: str, reason: str, at: str) -> None:
        self._not_ended("cancel")
        self.trigger_event(self.Cancelled, by=by, reason=reason, at=at)

    def record_import(self, *, fields: dict[str, Any], source_file: str, file_sha256: str,
                      at: str) -> None:
        """Complete a run that was forged elsewhere, from an imported alloy's results."""
        if self.status != "requested":
            raise RunStateError(str(self.id), f"cannot import into a run that is {self.status}")
        self.trigger_event(
            self.Imported, fields=fields, source_file=source_file, file_sha256=file_sha256, at=at)

    def sign(self, *, integrity: dict[str, Any], at: str) -> None:
        """Attach a signed integrity attestation to a sealed artifact."""
        if self.status not in ("sealed", "completed"):
            raise RunStateError(str(self.id), f"cannot sign: the run is {self.status}")
        self.trigger_event(self.Signed, integrity=integrity, at=at)

    def _publishable(self, what: str) -> None:
        if self.status != "completed":
            raise RunStateError(str(self.id), f"cannot {what}: the run is {self.status}; only a "
                                "completed, sealed run publishes")
        if (self.state.get("recipe") or {}).get("rehearsal"):
            # Not even forced: its weights are a random scale model, not the recipe's model.
            raise RunStateError(str(self.id), f"cannot {what}: this run is a scale-model "
                                "rehearsal, and a rehearsal is never published (rule: "
                                "rehearsal artifacts are unpublishable, forced or not)")

    def check_publishable(self, *, forced: bool, force_reason: str) -> None:
        """Raise unless the run completed and its gate passed, or it is forced with a reason.
        Publishing checks this before uploading anything; recording checks it again."""
        self._publishable("publish")
        gate = self.state["gate"] or {}
        if not gate.get("passed") and not (forced and force_reason.strip()):
            raise RunStateError(
                str(self.id), "cannot publish: the gate failed ("
                + "; ".join(gate.get("reasons", [])) + "); force it with a reason")

    def record_publication(self, *, target: str, url: str, files: list[str],
                           card_hash: str, forced: bool, force_reason: str, at: str) -> None:
        self.check_publishable(forced=forced, force_reason=force_reason)
        self.trigger_event(
            self.Published, target=target, url=url, files=files, card_hash=card_hash, forced=forced,
            force_reason=force_reason, at=at)

    def record_publish_failure(self, *, target: str, error_type: str, message: str,
                               request_id: str | None, status: int | None, at: str) -> None:
        self._publishable("record a publish failure")
        self.trigger_event(
            self.PublishFailed, target=target, error_type=error_type, message=message,
            request_id=request_id, status=status, at=at)

    # --- events: fields only; what each means for the state is in run_state.apply -------

    class RunEvent(Aggregate.Event):
        TOPIC = "foundry.ForgeRun.RunEvent"

        def apply(self, aggregate: Any) -> None:
            fields = {k: v for k, v in self.__dict__.items() if k not in _BASE_FIELDS}
            aggregate.state = run_state.apply(aggregate.state, type(self).__name__, fields)

    class Started(RunEvent):
        TOPIC = "foundry.ForgeRun.Started"
        attempt: int
        worker_host: str
        pid: int
        software: dict[str, str]
        device: str
        at: str
        node: dict[str, str] | None  # the cluster node (Ray id, class, site); None when local

    class SourceResolved(RunEvent):
        TOPIC = "foundry.ForgeRun.SourceResolved"
        base_model: str
        source_hash: str
        files: list[dict[str, Any]]
        at: str

    class StageStarted(RunEvent):
        TOPIC = "foundry.ForgeRun.StageStarted"
        cycle: int
        index: int
        stage_type: str
        config: dict[str, Any]
        input_hash: str
        attempt: int
        at: str
        fingerprint: str | None  # the stage cache key (#14); absent in older events

    class StageReused(RunEvent):
        TOPIC = "foundry.ForgeRun.StageReused"
        cycle: int
        index: int
        stage_type: str
        config: dict[str, Any]
        input_hash: str
        fingerprint: str
        reused_from: dict[str, Any]  # runId, cycle, index, type of the stage that computed it
        output_hash: str
        files: list[dict[str, Any]]
        metrics: dict[str, Any]
        notes: list[str]
        attempt: int
        at: str

    class StageProgressed(RunEvent):
        TOPIC = "foundry.ForgeRun.StageProgressed"
        cycle: int
        index: int
        fraction: float
        message: str
        at: str

    class StageCompleted(RunEvent):
        TOPIC = "foundry.ForgeRun.StageCompleted"
        cycle: int
        index: int
        output_hash: str
        files: list[dict[str, Any]]
        metrics: dict[str, Any]
        notes: list[str]
        seconds: float
        at: str

    class StageFailed(RunEvent):
        TOPIC = "foundry.ForgeRun.StageFailed"
        cycle: int
        index: int
        error_type: str
        message: str
        at: str

    class BenchmarksRecorded(RunEvent):
        TOPIC = "foundry.ForgeRun.BenchmarksRecorded"
        benchmarks: list[dict[str, Any]]
        at: str

    class GateEvaluated(RunEvent):
        TOPIC = "foundry.ForgeRun.GateEvaluated"
        passed: bool
        reasons: list[str]
        at: str

    class Sealed(RunEvent):
        TOPIC = "foundry.ForgeRun.Sealed"
        alloy_hash: str
        at: str

    class Completed(RunEvent):
        TOPIC = "foundry.ForgeRun.Completed"
        at: str

    class Failed(RunEvent):
        TOPIC = "foundry.ForgeRun.Failed"
        error_type: str
        message: str
        at: str

    class Imported(RunEvent):
        TOPIC = "foundry.ForgeRun.Imported"
        fields: dict[str, Any]
        source_file: str
        file_sha256: str
        at: str

    class Signed(RunEvent):
        TOPIC = "foundry.ForgeRun.Signed"
        integrity: dict[str, Any]
        at: str

    class Published(RunEvent):
        TOPIC = "foundry.ForgeRun.Published"
        target: str
        url: str
        files: list[str]
        card_hash: str
        forced: bool
        force_reason: str
        at: str

    class PublishFailed(RunEvent):
        TOPIC = "foundry.ForgeRun.PublishFailed"
        target: str
        error_type: str
        message: str
        request_id: str | None
        status: int | None
        at: str

    class Queued(RunEvent):
        TOPIC = "foundry.ForgeRun.Queued"
        reason: str
        at: str

    class Dispatched(RunEvent):
        TOPIC = "foundry.ForgeRun.Dispatched"
        dispatcher: str
        label_selector: dict[str, str]
        resources: dict[str, float]
        at: str

    class Cancelled(RunEvent):
        TOPIC = "foundry.ForgeRun.Cancelled"
        by: str
        reason: str
        at: str


_BASE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp"})

EVENT_TOPICS = tuple(
    cls.TOPIC for cls in (
        ForgeRun.Requested, ForgeRun.Started, ForgeRun.SourceResolved, ForgeRun.StageStarted,
        ForgeRun.StageProgressed, ForgeRun.StageCompleted, ForgeRun.StageFailed,
        ForgeRun.BenchmarksRecorded, ForgeRun.GateEvaluated, ForgeRun.Sealed,
        ForgeRun.Completed, ForgeRun.Failed, ForgeRun.Cancelled, ForgeRun.Signed,
        ForgeRun.Published, ForgeRun.PublishFailed, ForgeRun.Imported, ForgeRun.Queued,
        ForgeRun.Dispatched, ForgeRun.StageReused,
    )
)
