"""The ForgeRun aggregate on its own (no store): the legal path of a run, every transition it
refuses (before anything is recorded), and that a replay of its events gives the same state."""

from __future__ import annotations

import copy
from typing import Any
from uuid import uuid4

import pytest

from foundry.domain.errors import (
    RunEndedError,
    RunStateError,
    StageAlreadyCompletedError,
    StageNotStartedError,
)
from foundry.domain.forge_run import EVENT_TOPICS, ForgeRun

AT = "2026-01-01T00:00:00+00:00"
RECIPE: dict[str, Any] = {"name": "tiny", "version": "1.0.0", "stages": [{"type": "prune"}]}


def requested() -> ForgeRun:
    return ForgeRun.request(
        id=uuid4(), recipe_id="r-1", recipe_version="1.0.0", recipe_revision=3,
        recipe_hash="sha256:" + "0" * 64, recipe=copy.deepcopy(RECIPE), hardware_node="cpu@local",
        publish_target=None, requested_by="ana", command_id="c-1", at=AT,
    )


def started(run: ForgeRun | None = None) -> ForgeRun:
    run = run or requested()
    run.start(worker_host="h", pid=1, software={"python": "3.11"}, device="cpu", at=AT)
    return run


def with_stage(run: ForgeRun, cycle: int = 0, index: int = 0) -> ForgeRun:
    run.start_stage(cycle=cycle, index=index, stage_type="prune", config={"level": 0.2},
                    input_hash="sha256:in", at=AT)
    return run


def complete_stage(run: ForgeRun, cycle: int = 0, index: int = 0) -> None:
    run.complete_stage(cycle=cycle, index=index, output_hash="sha256:out", files=[],
                       metrics={"kept": 0.8}, notes=[], seconds=1.5, at=AT)


def sealed() -> ForgeRun:
    run = with_stage(started())
    complete_stage(run)
    run.record_benchmarks(benchmarks=[{"name": "b", "score": 1.0}], at=AT)
    run.evaluate_gate(passed=True, reasons=["b ok"], at=AT)
    run.seal(alloy_hash="sha256:alloy", at=AT)
    return run


def refused(run: ForgeRun, error: type[Exception], action: Any, match: str | None = None) -> None:
    """`action` raises `error` and records nothing."""
    before = (run.version, run.state)
    with pytest.raises(error, match=match):
        action()
    assert (run.version, run.state) == before


def test_a_requested_run_keeps_a_frozen_copy_of_its_recipe():
    recipe = copy.deepcopy(RECIPE)
    run = ForgeRun.request(
        id=uuid4(), recipe_id="r-1", recipe_version="1.0.0", recipe_revision=3,
        recipe_hash="h", recipe=recipe, hardware_node="cpu@local", publish_target=None,
        requested_by="ana", command_id=None, at=AT)
    recipe["stages"].append({"type": "train"})
    assert run.status == "requested"
    assert run.state["recipe"] == RECIPE
    assert (run.state["runId"], run.state["recipeRevision"]) == (str(run.id), 3)
    assert not run.ended


def test_the_whole_legal_path_ends_completed():
    run = sealed()
    assert run.status == "sealed"
    run.complete(at=AT)
    assert run.status == "completed"
    assert run.ended
    assert [type(e).__name__ for e in run.collect_events()] == [
        "Requested", "Started", "StageStarted", "StageCompleted", "BenchmarksRecorded",
        "GateEvaluated", "Sealed", "Completed"]


def test_each_start_is_a_new_attempt_and_a_resume_may_restart_the_interrupted_stage():
    run = with_stage(started())
    refused(run, RunStateError, lambda: with_stage(run), "already running")
    assert run.start(worker_host="h2", pid=2, software={}, device="cpu", at=AT) == 2
    with_stage(run)  # the stage interrupted in attempt 1 starts again in attempt 2
    assert run.stage(0, 0)["attempt"] == 2
    assert [a["workerHost"] for a in run.state["attempts"]] == ["h", "h2"]


def test_a_completed_stage_can_neither_start_nor_complete_again():
    run = with_stage(started())
    complete_stage(run)
    refused(run, StageAlreadyCompletedError, lambda: with_stage(run))
    refused(run, StageAlreadyCompletedError, lambda: complete_stage(run))
    refused(run, StageAlreadyCompletedError, lambda: run.report_progress(
        cycle=0, index=0, fraction=0.5, message="", at=AT))


def test_a_stage_that_never_started_can_not_progress_complete_or_fail():
    run = with_stage(started())
    refused(run, StageNotStartedError, lambda: complete_stage(run, index=1), "1 never started")
    refused(run, StageNotStartedError, lambda: run.report_progress(
        cycle=1, index=0, fraction=0.5, message="", at=AT))
    refused(run, StageNotStartedError, lambda: run.fail_stage(
        cycle=0, index=1, error_type="E", message="m", at=AT))


def test_nothing_but_start_queue_dispatch_fail_or_cancel_happens_before_a_worker_starts():
    run = requested()
    refused(run, RunStateError, lambda: with_stage(run), "the run is requested")
    refused(run, RunStateError, lambda: run.resolve_source(
        base_model="m", source_hash="h", files=[], at=AT))
    refused(run, RunStateError, lambda: run.record_benchmarks(benchmarks=[], at=AT))
    refused(run, RunStateError, lambda: run.complete(at=AT))
    assert run.queue(reason="no worker", at=AT)
    assert run.dispatch(dispatcher="ray", label_selector={"class": "cpu"},
                        resources={"CPU": 1.0}, at=AT) == 1


def test_a_run_seals_only_after_its_gate_and_completes_only_once_sealed():
    run = with_stage(started())
    complete_stage(run)
    refused(run, RunStateError, lambda: run.seal(alloy_hash="h", at=AT), "before the gate")
    refused(run, RunStateError, lambda: run.complete(at=AT), "the run is running")
    run.evaluate_gate(passed=False, reasons=["too slow"], at=AT)
    run.seal(alloy_hash="sha256:alloy", at=AT)
    assert (run.state["alloyHash"], run.state["gate"]["passed"]) == ("sha256:alloy", False)
    refused(run, RunStateError, lambda: run.start(
        worker_host="h", pid=1, software={}, device="cpu", at=AT), "already sealed")


@pytest.mark.parametrize("end", ["complete", "fail", "cancel"])
def test_an_ended_run_refuses_everything(end: str):
    run = sealed()
    {"complete": lambda: run.complete(at=AT),
     "fail": lambda: run.fail(error_type="E", message="m", at=AT),
     "cancel": lambda: run.cancel(by="ana", reason="r", at=AT)}[end]()
    assert run.ended
    for action in (
        lambda: run.start(worker_host="h", pid=1, software={}, device="cpu", at=AT),
        lambda: run.queue(reason="x", at=AT),
        lambda: run.dispatch(dispatcher="ray", label_selector={}, resources={}, at=AT),
        lambda: run.fail(error_type="E", message="m", at=AT),
        lambda: run.cancel(by="ana", reason="r", at=AT),
        lambda: run.complete(at=AT),
    ):
        refused(run, RunEndedError, action, f"the run is {run.status}")


def test_a_failed_stage_keeps_its_error_and_the_run_can_then_fail():
    run = with_stage(started())
    run.fail_stage(cycle=0, index=0, error_type="OOM", message="out of memory", at=AT)
    assert run.stage(0, 0)["error"] == {"type": "OOM", "message": "out of memory"}
    run.fail(error_type="OOM", message="stage 0:0 failed", at=AT)
    assert (run.status, run.state["failure"]["type"]) == ("failed", "OOM")


def test_a_queue_reason_is_recorded_only_when_it_changes_and_a_start_clears_it():
    run = requested()
    assert run.queue(reason="no worker offers gpu", at=AT) is True
    assert run.queue(reason="no worker offers gpu", at=AT) is False
    assert run.queue(reason="all gpu workers busy", at=AT) is True
    assert run.state["queue"]["reason"] == "all gpu workers busy"
    assert run.version == 3
    started(run)
    assert run.state["queue"] is None
    assert run.queue(reason="all gpu workers busy", at=AT) is True  # a new wait, after a crash


def test_publishing_needs_a_completed_run_and_a_passed_gate_or_a_forced_reason():
    run = sealed()
    refused(run, RunStateError, lambda: run.check_publishable(forced=False, force_reason=""),
            "only a completed, sealed run publishes")
    run.complete(at=AT)
    run.check_publishable(forced=False, force_reason="")  # the gate passed

    failing = with_stage(started())
    complete_stage(failing)
    failing.evaluate_gate(passed=False, reasons=["humaneval too low"], at=AT)
    failing.seal(alloy_hash="h", at=AT)
    failing.complete(at=AT)
    for reason in ("", "   "):
        refused(failing, RunStateError, lambda r=reason: failing.record_publication(
            target="hub", url="u", files=[], card_hash="c", forced=True, force_reason=r, at=AT),
            "humaneval too low")
    failing.record_publication(target="hub", url="u", files=["a"], card_hash="c", forced=True,
                               force_reason="ship the demo", at=AT)
    assert failing.state["publications"][0]["forceReason"] == "ship the demo"


def test_signing_needs_a_sealed_run_and_importing_a_fresh_one():
    run = started()
    refused(run, RunStateError, lambda: run.sign(integrity={"sig": "x"}, at=AT), "cannot sign")
    refused(run, RunStateError, lambda: run.record_import(
        fields={}, source_file="a.alloy.json", file_sha256="h", at=AT), "cannot import")
    fresh = requested()
    fresh.record_import(fields={"alloyHash": "sha256:a"}, source_file="a.alloy.json",
                        file_sha256="h", at=AT)
    assert (fresh.status, fresh.state["alloyHash"]) == ("completed", "sha256:a")
    done = sealed()
    done.sign(integrity={"sig": "x"}, at=AT)
    assert done.state["integrity"] == {"sig": "x"}


def test_an_event_never_changes_an_earlier_state():
    run = with_stage(started())
    before = run.state
    snapshot = copy.deepcopy(before)
    run.report_progress(cycle=0, index=0, fraction=0.5, message="half", at=AT)
    complete_stage(run)
    assert before == snapshot
    assert run.state is not before


def test_a_replay_of_the_stored_events_gives_the_same_state(replay: Any):
    run = with_stage(started())
    run.resolve_source(base_model="tiny/base", source_hash="sha256:s",
                       files=[{"path": "model.safetensors", "size": 3}], at=AT)
    run.report_progress(cycle=0, index=0, fraction=0.5, message="half", at=AT)
    run.start(worker_host="h2", pid=2, software={}, device="cpu", at=AT,
              node={"class": "cpu", "site": "local"})
    with_stage(run)
    complete_stage(run)
    run.record_benchmarks(benchmarks=[{"name": "b", "score": 1.0}], at=AT)
    run.evaluate_gate(passed=True, reasons=["ok"], at=AT)
    run.seal(alloy_hash="sha256:alloy", at=AT)
    run.complete(at=AT)
    events = run.collect_events()
    assert {e.TOPIC for e in events} <= set(EVENT_TOPICS)  # every event has a stable topic
    copy_of = replay(events)
    assert copy_of.state == run.state
    assert copy_of.version == run.version
