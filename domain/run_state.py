"""The state of a forge run as a JSON-native typed dict, and how each event changes it.

One pure function serves the ForgeRun aggregate (its `@event` bodies) and the artifact
projection (its fold), so the view and a replay can never disagree about what an event means.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired from the evaluated
# annotations, so State.__required_keys__ is right only when they are not strings.
import copy
from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict

RunStatus = Literal["requested", "running", "sealed", "completed", "failed", "cancelled"]
StageRecord = dict[str, Any]
"""One stage of one cycle: cycle, index, type, config, inputHash, attempt, status, startedAt,
progress; then outputHash, files, metrics, notes, seconds, completedAt (or error); fingerprint
and reusedFrom when set (the folds below write them)."""


class State(TypedDict):
    """A run as its events built it. The keys are the wire's (camelCase): the artifact
    builder, the views and the handlers read them, and mypy checks every read."""

    runId: str
    recipeId: str
    recipeVersion: str
    recipeRevision: int
    recipeHash: str
    recipe: dict[str, Any]
    hardwareNode: str
    publishTarget: Any  # the URL string, or {org, repoTemplate}, or None
    requestedBy: Any
    commandId: str | None
    reuse: bool
    requestedAt: str
    status: RunStatus
    attempts: list[dict[str, Any]]
    source: dict[str, Any] | None
    stages: dict[str, StageRecord]  # stage_key(cycle, index) -> record
    benchmarks: list[dict[str, Any]]
    gate: dict[str, Any] | None
    alloyHash: str | None
    sealedAt: str | None
    endedAt: str | None
    failure: dict[str, Any] | None
    cancellation: dict[str, Any] | None
    integrity: dict[str, Any] | None
    publications: list[dict[str, Any]]
    publishFailures: list[dict[str, Any]]
    queue: dict[str, Any] | None
    dispatches: list[dict[str, Any]]
    imported: NotRequired[dict[str, Any]]  # a run forged elsewhere, imported from its file

ENDED = frozenset({"completed", "failed", "cancelled"})


def stage_key(cycle: int, index: int) -> str:
    return f"{cycle}:{index}"


def initial(fields: dict[str, Any]) -> State:
    return {
        "runId": fields["run_id"],
        "recipeId": fields["recipe_id"],
        "recipeVersion": fields["recipe_version"],
        "recipeRevision": fields["recipe_revision"],
        "recipeHash": fields["recipe_hash"],
        "recipe": copy.deepcopy(fields["recipe"]),
        "hardwareNode": fields["hardware_node"],
        "publishTarget": fields["publish_target"],
        "requestedBy": fields["requested_by"],
        "commandId": fields["command_id"],
        "reuse": fields.get("reuse", True),
        "requestedAt": fields["at"],
        "status": "requested",
        "attempts": [],
        "source": None,
        "stages": {},
        "benchmarks": [],
        "gate": None,
        "alloyHash": None,
        "sealedAt": None,
        "endedAt": None,
        "failure": None,
        "cancellation": None,
        "integrity": None,
        "publications": [],
        "publishFailures": [],
        "queue": None,
        "dispatches": [],
    }


def apply(state: State, name: str, f: dict[str, Any]) -> State:
    """The state after the event `name` with fields `f` (a new dict; `state` is not changed).

    Copy-on-write: the result shares every part the event does not change with `state`, so an
    event costs the same on the 500th stage as on the first. Nothing may change a state (or
    anything in it) in place: each fold below writes only to `s`, the new top-level dict.
    """
    try:
        fold = _FOLDS[name]
    except KeyError:
        msg = f"unknown run event {name!r}"
        raise ValueError(msg) from None
    s = state.copy()
    fold(s, state, copy.deepcopy(f))
    return s


Fold = Callable[[State, State, dict[str, Any]], None]
"""(new state to fill, state before, event fields) -> None."""


def _update_stage(s: State, state: State, f: dict[str, Any], **changes: Any) -> None:
    key = stage_key(f["cycle"], f["index"])
    s["stages"] = {**state["stages"], key: {**state["stages"][key], **changes}}


def _started(s: State, state: State, f: dict[str, Any]) -> None:
    s["status"] = "running"
    s["queue"] = None
    s["attempts"] = [*state["attempts"], {
        "attempt": f["attempt"], "workerHost": f["worker_host"], "pid": f["pid"],
        "software": f["software"], "device": f["device"], "startedAt": f["at"],
        # Events recorded before cluster dispatch existed carry no node.
        **({"node": f["node"]} if f.get("node") else {}),
    }]


def _source_resolved(s: State, _state: State, f: dict[str, Any]) -> None:
    s["source"] = {"baseModel": f["base_model"], "sourceHash": f["source_hash"],
                   "files": f["files"], "resolvedAt": f["at"]}


def _stage_started(s: State, state: State, f: dict[str, Any]) -> None:
    s["stages"] = {**state["stages"], stage_key(f["cycle"], f["index"]): {
        "cycle": f["cycle"], "index": f["index"], "type": f["stage_type"],
        "config": f["config"], "inputHash": f["input_hash"], "attempt": f["attempt"],
        "status": "running", "startedAt": f["at"], "progress": None,
        **({"fingerprint": f["fingerprint"]} if f.get("fingerprint") else {}),
    }}


def _stage_reused(s: State, state: State, f: dict[str, Any]) -> None:
    """A completed stage whose outputs came from another run's stage of the same fingerprint:
    the record reads like a completion (seconds 0 here) plus `reusedFrom`."""
    s["stages"] = {**state["stages"], stage_key(f["cycle"], f["index"]): {
        "cycle": f["cycle"], "index": f["index"], "type": f["stage_type"],
        "config": f["config"], "inputHash": f["input_hash"], "attempt": f["attempt"],
        "fingerprint": f["fingerprint"], "reusedFrom": f["reused_from"],
        "status": "completed", "startedAt": f["at"], "progress": None,
        "outputHash": f["output_hash"], "files": f["files"], "metrics": f["metrics"],
        "notes": f["notes"], "seconds": 0.0, "completedAt": f["at"],
    }}


def _stage_progressed(s: State, state: State, f: dict[str, Any]) -> None:
    _update_stage(s, state, f, progress={"fraction": f["fraction"], "message": f["message"],
                                         "at": f["at"]})


def _stage_completed(s: State, state: State, f: dict[str, Any]) -> None:
    _update_stage(s, state, f, status="completed", outputHash=f["output_hash"],
                  files=f["files"], metrics=f["metrics"], notes=f["notes"],
                  seconds=f["seconds"], completedAt=f["at"])


def _stage_failed(s: State, state: State, f: dict[str, Any]) -> None:
    _update_stage(s, state, f, status="failed", completedAt=f["at"],
                  error={"type": f["error_type"], "message": f["message"]})


def _benchmarks_recorded(s: State, _state: State, f: dict[str, Any]) -> None:
    s["benchmarks"] = f["benchmarks"]


def _gate_evaluated(s: State, _state: State, f: dict[str, Any]) -> None:
    s["gate"] = {"passed": f["passed"], "reasons": list(f["reasons"]), "at": f["at"]}


def _sealed(s: State, _state: State, f: dict[str, Any]) -> None:
    s["status"], s["alloyHash"], s["sealedAt"] = "sealed", f["alloy_hash"], f["at"]


def _completed(s: State, _state: State, f: dict[str, Any]) -> None:
    s["status"], s["endedAt"] = "completed", f["at"]


def _failed(s: State, _state: State, f: dict[str, Any]) -> None:
    s["status"], s["endedAt"] = "failed", f["at"]
    s["failure"] = {"type": f["error_type"], "message": f["message"]}


def _signed(s: State, _state: State, f: dict[str, Any]) -> None:
    s["integrity"] = f["integrity"]


def _published(s: State, state: State, f: dict[str, Any]) -> None:
    s["publications"] = [*state.get("publications", []), {
        "target": f["target"], "url": f["url"], "publishedAt": f["at"],
        "files": list(f["files"]), "cardHash": f["card_hash"], "forced": f["forced"],
        "forceReason": f["force_reason"]}]


def _publish_failed(s: State, state: State, f: dict[str, Any]) -> None:
    s["publishFailures"] = [*state.get("publishFailures", []), {
        "target": f["target"], "errorType": f["error_type"], "message": f["message"],
        "requestId": f["request_id"], "status": f["status"], "at": f["at"]}]


def _imported(s: State, _state: State, f: dict[str, Any]) -> None:
    # A run that happened elsewhere: its artifact fields are kept exactly as they came.
    s["status"], s["endedAt"] = "completed", f["at"]
    s["alloyHash"] = f["fields"].get("alloyHash")
    s["imported"] = {"fields": f["fields"], "sourceFile": f["source_file"],
                     "fileSha256": f["file_sha256"], "importedAt": f["at"]}


def _queued(s: State, _state: State, f: dict[str, Any]) -> None:
    s["queue"] = {"reason": f["reason"], "at": f["at"]}


def _dispatched(s: State, state: State, f: dict[str, Any]) -> None:
    # Operational facts, not content: the artifact builder does not read them.
    s["queue"] = None
    s["dispatches"] = [*state.get("dispatches", []), {
        "dispatcher": f["dispatcher"], "labelSelector": dict(f["label_selector"]),
        "resources": dict(f["resources"]), "at": f["at"]}]


def _cancelled(s: State, _state: State, f: dict[str, Any]) -> None:
    s["status"], s["endedAt"] = "cancelled", f["at"]
    s["cancellation"] = {"by": f["by"], "reason": f["reason"]}


# One fold per event type: adding an event means adding one function and one line here.
_FOLDS: dict[str, Fold] = {
    "Started": _started, "SourceResolved": _source_resolved, "StageStarted": _stage_started,
    "StageProgressed": _stage_progressed, "StageCompleted": _stage_completed,
    "StageFailed": _stage_failed, "BenchmarksRecorded": _benchmarks_recorded,
    "GateEvaluated": _gate_evaluated, "Sealed": _sealed, "Completed": _completed,
    "Failed": _failed, "Signed": _signed, "Published": _published,
    "PublishFailed": _publish_failed, "Imported": _imported, "Queued": _queued,
    "Dispatched": _dispatched, "Cancelled": _cancelled, "StageReused": _stage_reused,
}


def current_attempt(state: State) -> int:
    return int(state["attempts"][-1]["attempt"]) if state["attempts"] else 0


def completed_stages(state: State) -> list[dict[str, Any]]:
    """Completed stage records in execution order."""
    done = [r for r in state["stages"].values() if r["status"] == "completed"]
    return sorted(done, key=lambda r: (r["cycle"], r["index"]))
