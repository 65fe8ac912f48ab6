"""The run-state fold (`foundry.domain.run_state`): the one pure function that the ForgeRun
aggregate, the artifact view and `audit replay` share. It must never change a state it is
given (states are shared copy-on-write), and it must refuse an event it does not know."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundry.domain import run_state

AT = "2026-01-01T00:00:00+00:00"


def initial() -> run_state.State:
    return run_state.initial({
        "run_id": "run-1", "recipe_id": "r-1", "recipe_version": "1.0.0", "recipe_revision": 1,
        "recipe_hash": "sha256:h", "recipe": {"stages": [{"type": "prune"}]},
        "hardware_node": "cpu@local", "publish_target": None, "requested_by": "ana",
        "command_id": None, "at": AT,
    })


def started(attempt: int = 1, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("Started", {"attempt": attempt, "worker_host": "h", "pid": 1, "software": {},
                        "device": "cpu", "at": AT, **extra})


def stage_started(cycle: int, index: int) -> tuple[str, dict[str, Any]]:
    return ("StageStarted", {"cycle": cycle, "index": index, "stage_type": "prune",
                             "config": {"level": 0.2}, "input_hash": "sha256:in", "attempt": 1,
                             "at": AT})


def stage_completed(cycle: int, index: int) -> tuple[str, dict[str, Any]]:
    return ("StageCompleted", {"cycle": cycle, "index": index, "output_hash": "sha256:out",
                               "files": [{"path": "m", "size": 1}], "metrics": {"m": 1},
                               "notes": [], "seconds": 2.0, "at": AT})


# One event of every kind the fold knows, in an order a run could record them.
EVERY_EVENT: list[tuple[str, dict[str, Any]]] = [
    ("Queued", {"reason": "no worker", "at": AT}),
    ("Dispatched", {"dispatcher": "ray", "label_selector": {"class": "cpu"},
                    "resources": {"CPU": 1.0}, "at": AT}),
    started(),
    ("SourceResolved", {"base_model": "m", "source_hash": "sha256:s", "files": [], "at": AT}),
    stage_started(0, 0),
    ("StageProgressed", {"cycle": 0, "index": 0, "fraction": 0.5, "message": "half", "at": AT}),
    stage_completed(0, 0),
    stage_started(0, 1),
    ("StageFailed", {"cycle": 0, "index": 1, "error_type": "E", "message": "m", "at": AT}),
    ("BenchmarksRecorded", {"benchmarks": [{"name": "b", "score": 1.0}], "at": AT}),
    ("GateEvaluated", {"passed": True, "reasons": ["ok"], "at": AT}),
    ("Sealed", {"alloy_hash": "sha256:a", "at": AT}),
    ("Signed", {"integrity": {"sig": "x"}, "at": AT}),
    ("Completed", {"at": AT}),
    ("Published", {"target": "hub", "url": "u", "files": ["a"], "card_hash": "c",
                   "forced": False, "force_reason": "", "at": AT}),
    ("PublishFailed", {"target": "hub", "error_type": "E", "message": "m", "request_id": None,
                       "status": 500, "at": AT}),
    ("Failed", {"error_type": "E", "message": "m", "at": AT}),
    ("Cancelled", {"by": "ana", "reason": "r", "at": AT}),
]


def fold(events: list[tuple[str, dict[str, Any]]]) -> run_state.State:
    state = initial()
    for name, fields in events:
        state = run_state.apply(state, name, fields)
    return state


def test_the_initial_state_is_requested_with_nothing_done():
    state = initial()
    assert state["status"] == "requested"
    assert (state["attempts"], state["stages"], state["gate"], state["alloyHash"]) == (
        [], {}, None, None)
    assert run_state.current_attempt(state) == 0


def test_the_fold_never_changes_the_state_or_the_fields_it_is_given():
    state = initial()
    for name, fields in EVERY_EVENT:
        state_before, fields_before = copy.deepcopy(state), copy.deepcopy(fields)
        new = run_state.apply(state, name, fields)
        assert state == state_before, name
        assert fields == fields_before, name
        assert new is not state
        state = new


def test_changing_the_event_fields_afterwards_does_not_reach_the_state():
    name, fields = stage_completed(0, 0)
    state = run_state.apply(fold([started(), stage_started(0, 0)]), name, fields)
    fields["files"].append({"path": "injected"})
    fields["metrics"]["m"] = 99
    record = state["stages"]["0:0"]
    assert (record["files"], record["metrics"]) == ([{"path": "m", "size": 1}], {"m": 1})


def test_an_unknown_event_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown run event 'Exploded'"):
        run_state.apply(initial(), "Exploded", {"at": AT})


def test_a_stage_goes_from_running_to_completed_keeping_what_it_started_with():
    state = fold([started(), stage_started(0, 0),
                  ("StageProgressed", {"cycle": 0, "index": 0, "fraction": 0.25,
                                       "message": "quarter", "at": AT}),
                  stage_completed(0, 0)])
    record = state["stages"]["0:0"]
    assert record["status"] == "completed"
    assert (record["type"], record["config"], record["inputHash"]) == (
        "prune", {"level": 0.2}, "sha256:in")
    assert record["progress"]["fraction"] == 0.25
    assert (record["outputHash"], record["seconds"]) == ("sha256:out", 2.0)


def test_a_resume_adds_an_attempt_and_only_a_cluster_start_records_a_node():
    state = fold([started(1), started(2, node={"class": "gpu", "site": "a"})])
    assert run_state.current_attempt(state) == 2
    assert "node" not in state["attempts"][0]
    assert state["attempts"][1]["node"] == {"class": "gpu", "site": "a"}


def test_dispatch_and_start_clear_the_queue_reason():
    queued = ("Queued", {"reason": "no worker", "at": AT})
    assert fold([queued])["queue"] == {"reason": "no worker", "at": AT}
    assert fold([queued, EVERY_EVENT[1]])["queue"] is None
    assert fold([queued, started()])["queue"] is None
    assert len(fold([EVERY_EVENT[1], EVERY_EVENT[1]])["dispatches"]) == 2


def test_an_imported_run_is_completed_with_the_alloy_hash_it_came_with():
    state = fold([("Imported", {"fields": {"alloyHash": "sha256:x", "results": {}},
                                "source_file": "a.alloy.json", "file_sha256": "sha256:f",
                                "at": AT})])
    assert (state["status"], state["alloyHash"], state["endedAt"]) == (
        "completed", "sha256:x", AT)
    assert state["imported"]["sourceFile"] == "a.alloy.json"


@pytest.mark.parametrize(("event", "status", "key", "value"), [
    (("Sealed", {"alloy_hash": "sha256:a", "at": AT}), "sealed", "alloyHash", "sha256:a"),
    (("Completed", {"at": AT}), "completed", "endedAt", AT),
    (("Failed", {"error_type": "E", "message": "m", "at": AT}), "failed", "failure",
     {"type": "E", "message": "m"}),
    (("Cancelled", {"by": "ana", "reason": "r", "at": AT}), "cancelled", "cancellation",
     {"by": "ana", "reason": "r"}),
])
def test_each_lifecycle_event_sets_its_status_and_what_goes_with_it(
    event: tuple[str, dict[str, Any]], status: str, key: str, value: Any
):
    state = fold([started(), event])
    assert (state["status"], state[key]) == (status, value)


@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), unique=True, max_size=12))
def test_completed_stages_come_in_execution_order_not_text_order(keys: list[tuple[int, int]]):
    events = [started()]
    for cycle, index in keys:
        events += [stage_started(cycle, index), stage_completed(cycle, index)]
    events.append(stage_started(99, 0))  # still running: not listed
    done = run_state.completed_stages(fold(events))
    assert [(r["cycle"], r["index"]) for r in done] == sorted(keys)


def test_every_key_a_fold_writes_is_declared_by_the_state_type():
    """mypy checks every read of State against its declared keys; this checks the writes
    at run time, for the initial state and after every event the fold knows."""
    from typing import get_args, get_type_hints

    declared = set(get_type_hints(run_state.State))
    required = set(run_state.State.__required_keys__)
    assert set(initial()) == required and declared - required == {"imported"}
    imported = ("Imported", {"fields": {"alloyHash": "sha256:x"}, "source_file": "a",
                             "file_sha256": "sha256:f", "at": AT})
    state = initial()
    for name, fields in [*EVERY_EVENT, imported]:
        state = run_state.apply(state, name, fields)
        assert set(state) <= declared, (name, set(state) - declared)
        assert state["status"] in get_args(run_state.RunStatus), name
