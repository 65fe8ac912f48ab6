"""Forge runs end to end with the deterministic fake executors, on SQLite and PostgreSQL.

Each test gets its own store (`store_url`), its own FOUNDRY_STATE_DIR (blobs, heartbeats,
logs) and its own fake model directory. Subprocess workers inherit that environment.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from foundry.adapters.store.blobs import FileRecord
from foundry.domain.artifact_builder import alloy_hash, artifact_id
from foundry.domain.errors import (
    RunEndedError,
    RunStateError,
    StageAlreadyCompletedError,
    StageNotStartedError,
)
from foundry.domain.forge_run import ForgeRun
from foundry.domain.values.artifact import ForgeArtifact
from foundry.executors.fake import FakeExecutor, build_fake_registry
from tests.conftest import (
    PG_SERVER,
    as_node,
    count_events,
    count_run_events,
    ok,
    run_events,
    wait_for,
)

A = "forge_artifacts"
R = "forge_recipes"

# ALLOY-FORMAT.md section 4: the recipe fields an artifact freezes, written out here (not
# imported) so a field the builder forgets fails a test.
SNAPSHOT_FIELDS = (
    "description", "userSummary", "author", "tags", "license", "methodologyPaperUrl",
    "limitations", "priorMetricBaselines", "source", "calibrationCorpus", "quantTiers",
    "evaluationBenchmarks", "hardware", "stages", "cycles",
)
# The tiny recipe with cycles=2: transform stages repeat, quant and eval run in the last cycle.
PLAN = [(1, 0, "prune"), (1, 1, "train"), (1, 2, "lora"),
        (2, 0, "prune"), (2, 1, "train"), (2, 2, "lora"), (2, 3, "quant"), (2, 4, "eval")]


# --- fixtures and helpers ------------------------------------------------------------------

# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


@pytest.fixture
def recipe(recipe_data: dict[str, Any]) -> dict[str, Any]:
    """The example recipe on the fake source, two cycles, every snapshot field filled."""
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    data["cycles"] = 2
    data["methodologyPaperUrl"] = "https://example.org/paper"
    data["calibrationCorpus"] = {"name": "stdlib-sample", "contentHash": "sha256:" + "ab" * 32,
                                 "sizeBytes": 1234}
    data["priorMetricBaselines"] = [{
        "metric": "perplexity", "value": 1000.0, "source": "a worse run",
        "measuredAt": "2026-01-01T00:00:00+00:00", "measurementMethod": "fake eval",
    }]
    return data


def create_recipe(foundry: Any, data: dict[str, Any]) -> str:
    return str(ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"])


def forge(foundry: Any, recipe_id: str, **params: Any) -> dict[str, Any]:
    return ok(foundry.execute("forge/run", {"recipeId": recipe_id, **params}))


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def read_artifact(foundry: Any, run_id: str) -> dict[str, Any]:
    read = ok(foundry.execute("data/read", {"collection": A, "id": artifact_id(run_id)}))
    assert read["found"], read
    return dict(read["data"])


def assert_alloy_hash_verifies(doc: dict[str, Any]) -> None:
    assert doc["alloyHash"].startswith("sha256:")
    assert alloy_hash({k: v for k, v in doc.items() if k != "status"}) == doc["alloyHash"]


def stage_outputs(foundry: Any, run_id: str) -> list[tuple[int, int, str, str]]:
    status = ok(foundry.execute("forge/status", {"runId": run_id}))
    return [(s["cycle"], s["index"], s["inputHash"], s["outputHash"]) for s in status["stages"]]


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (reaped here, reaped elsewhere, or a zombie)."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    if done:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True


def running_stage(foundry: Any, run_id: str, indexes: set[int]) -> dict[str, Any] | None:
    status = ok(foundry.execute("forge/status", {"runId": run_id}))
    running = [s for s in status["stages"] if s["status"] == "running" and s["index"] in indexes]
    return running[0] if running else None


def stage_blocks(events: list[Any]) -> list[tuple[int, int, str]]:
    """Parse StageStarted (StageProgressed)* StageCompleted blocks; fail on anything else."""
    blocks: list[tuple[int, int, str]] = []
    i = 0
    while i < len(events) and type(events[i]).__name__ == "StageStarted":
        start = events[i]
        key = (start.cycle, start.index)
        i += 1
        while i < len(events) and type(events[i]).__name__ == "StageProgressed":
            assert (events[i].cycle, events[i].index) == key
            i += 1
        assert type(events[i]).__name__ == "StageCompleted", names(events[i:])
        assert (events[i].cycle, events[i].index) == key
        blocks.append((*key, start.stage_type))
        i += 1
    assert i == len(events), f"unexpected events after the stages: {names(events[i:])}"
    return blocks


class CancelsItsRun:
    """Wraps a fake executor; cancels the run through forge/cancel before, or right after,
    the stage's first progress report (the one the reporter records)."""

    def __init__(self, foundry: Any, inner: FakeExecutor, *, after_first_report: bool) -> None:
        self.foundry, self.inner, self.after = foundry, inner, after_first_report
        self.stage_type = inner.stage_type

    def run(self, ctx: Any, reporter: Any) -> Any:
        def cancel() -> None:
            ok(self.foundry.execute("forge/cancel", {"runId": ctx.run_id, "reason": "test"}))

        if not self.after:
            cancel()
            return self.inner.run(ctx, reporter)
        calls = []

        class Proxy:
            def progress(self, fraction: float, message: str = "", metrics: Any = None) -> None:
                reporter.progress(fraction, message, metrics)
                calls.append(fraction)
                if len(calls) == 1:
                    cancel()

        return self.inner.run(ctx, Proxy())


def cancelling_registry(foundry: Any, stage_type: str, *, after_first_report: bool) -> Any:
    registry = build_fake_registry()
    registry.register(CancelsItsRun(foundry, FakeExecutor(stage_type),
                                    after_first_report=after_first_report), replace=True)
    return registry


# --- a successful run ------------------------------------------------------------------------

def test_a_successful_run_records_each_step_in_order_and_seals_a_complete_artifact(
        foundry, recipe, store_url):
    recipe_id = create_recipe(foundry, recipe)
    # In-process runs execute here: this process is configured as that node.
    with as_node(store_url, foundry, "rtx-5090", "lab-2") as node:
        result = forge(node, recipe_id, hardwareNode="rtx-5090@lab-2", requestedBy="ana")
    assert result["status"] == "completed" and result["repeated"] is False
    run_id = result["runId"]

    events = run_events(foundry, run_id)
    assert names(events)[:3] == ["Requested", "Started", "SourceResolved"]
    assert names(events)[-4:] == ["BenchmarksRecorded", "GateEvaluated", "Sealed", "Completed"]
    assert stage_blocks(events[3:-4]) == PLAN
    by_name = {type(e).__name__: e for e in events}
    completed = [e for e in events if type(e).__name__ == "StageCompleted"]
    starts = [e for e in events if type(e).__name__ == "StageStarted"]
    # Each stage reads what the one before it wrote; the first reads the source.
    assert starts[0].input_hash == by_name["SourceResolved"].source_hash
    assert [s.input_hash for s in starts[1:]] == [c.output_hash for c in completed[:-1]]

    doc = read_artifact(foundry, run_id)
    recipe_now = ok(foundry.execute("data/read", {"collection": R, "id": recipe_id}))["data"]
    assert doc["id"] == result["artifactId"] == artifact_id(run_id)
    assert doc["id"] not in (run_id, recipe_id)
    assert (doc["recipeId"], doc["recipeVersion"], doc["recipeName"]) == (
        recipe_id, recipe["version"], recipe["name"])
    for field in SNAPSHOT_FIELDS:
        assert field in doc, f"artifact misses the recipe snapshot field {field}"
        assert doc[field] == recipe_now[field], field
    assert [s["type"] for s in doc["stages"]] == [s["type"] for s in recipe["stages"]]
    assert doc["cycles"] == 2
    sealed = by_name["Sealed"]
    assert doc["forgedAt"] == sealed.at == doc["results"]["completedAt"]
    assert doc["hardwareNode"] == "rtx-5090@lab-2"
    assert doc["durationMinutes"] == doc["results"]["durationMinutes"] >= 0
    quant = completed[PLAN.index((2, 3, "quant"))]
    assert doc["hardwareVerified"] == quant.metrics["hardwareVerified"]
    assert [h["format"] for h in doc["hardwareVerified"]] == ["gguf-Q8_0", "gguf-Q4_K_M"]
    assert all(h["device"] == "cpu" and h["verified"] is True for h in doc["hardwareVerified"])
    evaluation = completed[-1].metrics
    for key in ("baselinePerplexity", "finalPerplexity", "improvementPct"):
        assert doc["results"][key] == evaluation[key], key
    assert doc["results"]["benchmarks"] == by_name["BenchmarksRecorded"].benchmarks
    assert [b["name"] for b in doc["results"]["benchmarks"]] == ["perplexity"]
    assert doc["results"]["samples"] == []
    assert doc["alloyHash"] == sealed.alloy_hash == result["alloyHash"]
    assert_alloy_hash_verifies(doc)
    assert doc["status"] == "completed"
    ForgeArtifact.model_validate({k: v for k, v in doc.items() if k != "status"})
    provenance = doc["provenance"]
    assert provenance["runId"] == run_id and provenance["requestedBy"] == "ana"
    assert [(s["cycle"], s["index"], s["type"]) for s in provenance["stages"]] == PLAN
    assert [s["outputHash"] for s in provenance["stages"]] == [c.output_hash for c in completed]
    assert provenance["gate"]["passed"] is True


def test_artifacts_are_listed_by_recipe_hardware_node_and_status_in_forged_order(
        foundry, recipe, store_url):
    first = create_recipe(foundry, recipe)
    other = create_recipe(foundry, {**recipe, "name": "other-recipe"})
    a = forge(foundry, first, hardwareNode="cpu@local")["runId"]
    b = forge(foundry, other, hardwareNode="cpu@local")["runId"]
    # In-process runs execute here: for one run a process configured as that node.
    with as_node(store_url, foundry, "rtx-5090", "lab-2") as node:
        c = forge(node, first, hardwareNode="rtx-5090@lab-2")["runId"]
    foundry.use_registry(build_fake_registry(fail_on="eval"))
    d = forge(foundry, first, hardwareNode="cpu@local")["runId"]

    def listed(**params: Any) -> list[str]:
        items = ok(foundry.execute("data/list", {"collection": A, **params}))["items"]
        return [i["provenance"]["runId"] for i in items]

    forged = [{"field": "forgedAt", "direction": "asc"}]
    assert listed(filter={"recipeId": first, "status": "completed"}, orderBy=forged) == [a, c]
    assert listed(filter={"recipeId": first}, orderBy=[{"field": "forgedAt",
                                                          "direction": "desc"}])[:2] == [c, a]
    assert listed(filter={"hardwareNode": "rtx-5090@lab-2"}) == [c]
    assert sorted(listed(filter={"hardwareNode": "cpu@local"})) == sorted([a, b, d])
    assert listed(filter={"status": "failed"}) == [d]
    assert listed(filter={"recipeId": other}) == [b]
    every = ok(foundry.execute("data/list", {"collection": A, "orderBy": forged}))["items"]
    sealed = [i for i in every if i["status"] == "completed"]
    assert [i["forgedAt"] for i in sealed] == sorted(i["forgedAt"] for i in sealed)
    for item in sealed:
        assert_alloy_hash_verifies(item)
    assert "alloyHash" not in read_artifact(foundry, d)


# --- failure and cancellation ----------------------------------------------------------------

def test_a_failing_stage_records_the_failure_and_keeps_earlier_outputs(foundry, recipe):
    foundry.use_registry(build_fake_registry(fail_on="train"))
    recipe_id = create_recipe(foundry, recipe)
    result = forge(foundry, recipe_id)
    assert result["status"] == "failed"
    assert result["failure"] == {"type": "RuntimeError", "message": "injected failure in train"}

    events = run_events(foundry, result["runId"])
    assert names(events)[-2:] == ["StageFailed", "Failed"]
    stage_failed, failed = events[-2], events[-1]
    assert (stage_failed.cycle, stage_failed.index) == (1, 1)
    assert stage_failed.message == failed.message == "injected failure in train"
    assert not {"BenchmarksRecorded", "Sealed", "Completed"} & set(names(events))
    started = [(e.cycle, e.index) for e in events if type(e).__name__ == "StageStarted"]
    assert started == [(1, 0), (1, 1)]  # nothing after the failed stage started

    done = [e for e in events if type(e).__name__ in ("StageCompleted", "SourceResolved")]
    records = [FileRecord.from_dict(f) for e in done for f in e.files]
    assert len(records) >= 4
    assert foundry.blobs.verify_records(records) == []
    doc = read_artifact(foundry, result["runId"])
    assert doc["status"] == "failed" and "alloyHash" not in doc
    assert [s["type"] for s in doc["provenance"]["stages"]] == ["prune"]


def test_cancelling_a_running_run_stops_its_worker_before_any_later_stage(
        foundry, recipe, monkeypatch):
    monkeypatch.setenv("FOUNDRY_FAKE_SLEEP", "0.9")
    recipe_id = create_recipe(foundry, recipe)
    started = forge(foundry, recipe_id, wait=False)
    run_id, pid = started["runId"], started["workerPid"]
    assert started["detached"] is True
    wait_for(lambda: running_stage(foundry, run_id, {1}), 30, "the second stage to run")

    cancelled = ok(foundry.execute("forge/cancel", {"runId": run_id, "reason": "enough",
                                                    "by": "ana"}))
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation"] == {"by": "ana", "reason": "enough"}
    wait_for(lambda: process_gone(pid), 15, "the worker to stop")

    events = run_events(foundry, run_id)
    after = names(events)[names(events).index("Cancelled") + 1:]
    assert after == [], f"events after the cancel: {after}"
    started_stages = [(e.cycle, e.index) for e in events if type(e).__name__ == "StageStarted"]
    assert started_stages == [(s["cycle"], s["index"]) for s in cancelled["stages"]]
    assert (1, 1) in started_stages and len(started_stages) < len(PLAN)
    assert ok(foundry.execute("forge/status", {"runId": run_id}))["status"] == "cancelled"
    assert read_artifact(foundry, run_id)["status"] == "cancelled"


def test_cancelling_a_finished_run_is_refused_and_writes_nothing(foundry, recipe):
    run_id = forge(foundry, create_recipe(foundry, recipe))["runId"]
    before = count_run_events(foundry)
    refused = foundry.execute("forge/cancel", {"runId": run_id, "reason": "too late"})
    assert refused["success"] is False and refused["errorCode"] == "run_ended"
    assert "completed" in refused["error"]
    assert count_run_events(foundry) == before
    assert ok(foundry.execute("forge/status", {"runId": run_id}))["status"] == "completed"


def test_a_cancel_landing_late_in_a_stage_ends_the_run_as_cancelled(foundry, recipe):
    foundry.use_registry(cancelling_registry(foundry, "lora", after_first_report=True))
    result = foundry.execute("forge/run", {"recipeId": create_recipe(foundry, recipe)})
    assert result["success"], result
    assert result["status"] == "cancelled"


# --- idempotency and bad input ---------------------------------------------------------------

def test_a_repeated_command_id_returns_the_first_run_without_a_second_request(foundry, recipe):
    recipe_id = create_recipe(foundry, recipe)
    first = forge(foundry, recipe_id, commandId="forge-once")
    before = count_run_events(foundry)
    again = forge(foundry, recipe_id, commandId="forge-once")
    assert again["runId"] == first["runId"] and again["repeated"] is True
    assert again["alloyHash"] == first["alloyHash"] and again["status"] == "completed"
    assert count_run_events(foundry) == before
    assert names(run_events(foundry, first["runId"])).count("Requested") == 1
    other = forge(foundry, recipe_id, commandId="forge-twice")
    assert other["runId"] != first["runId"]


def _no_stages(r: dict[str, Any]) -> dict[str, Any]:
    return {"recipe": {**r, "stages": []}}


def _compact(r: dict[str, Any]) -> dict[str, Any]:
    return {"recipe": {**r, "stages": [*r["stages"], {"type": "compact"}]}}


BAD_REQUESTS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str, str]] = {
    "unknown recipe": (lambda _r: {"recipeId": str(uuid4())}, "not_found", "not found"),
    "unknown recipe version": (lambda _r: {"recipeVersion": "9.9.9"}, "invalid_input",
                               "never had version 9.9.9"),
    "recipe without stages": (_no_stages, "invalid_input", "no stages"),
    "hardware node that does not parse": (lambda _r: {"hardwareNode": "RTX 5090!"},
                                          "invalid_input", "hardwareNode"),
    "publish target that does not parse": (lambda _r: {"publishTarget": "ftp://x/y"},
                                           "invalid_input", "publishTarget"),
    "stage type no executor runs": (_compact, "invalid_input", "not executable"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_forge_request_is_refused_clearly_and_writes_no_run_event(foundry, recipe, case):

    make, code, words = BAD_REQUESTS[case]
    params = make(recipe)
    recipe_id = create_recipe(foundry, params.pop("recipe", recipe))
    recipe_events = count_events(foundry)
    result = foundry.execute("forge/run", {"recipeId": recipe_id, **params})
    assert result["success"] is False, result
    assert result["errorCode"] == code and words in result["error"], result
    assert count_run_events(foundry) == 0
    assert count_events(foundry) == recipe_events  # no version pinned either
    listed = ok(foundry.execute("data/list", {"collection": A}))
    assert listed["count"] == 0


# --- resume after a crash --------------------------------------------------------------------

def _kill_mid_run(foundry: Any, recipe_id: str, monkeypatch: pytest.MonkeyPatch,
                  **params: Any) -> tuple[str, dict[str, set[tuple[int, int]]]]:
    """Start a detached worker, SIGKILL it while the 2nd or 3rd stage runs. Returns the run
    id and the stages that were completed and running when it died."""
    monkeypatch.setenv("FOUNDRY_FAKE_SLEEP", "1.5")
    started = forge(foundry, recipe_id, wait=False, **params)
    run_id, pid = started["runId"], started["workerPid"]
    wait_for(lambda: running_stage(foundry, run_id, {1, 2}), 30, "the 2nd or 3rd stage")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), 10, "the killed worker to go")
    status = ok(foundry.execute("forge/status", {"runId": run_id}))
    assert status["status"] == "running"
    owner = status["owner"]
    assert owner["pid"] == pid and owner["alive"] is False and owner["stuck"] is True
    assert "forge/resume" in owner["hint"]
    at_kill = {state: {(s["cycle"], s["index"]) for s in status["stages"]
                       if s["status"] == state} for state in ("completed", "running")}
    assert (1, 0) in at_kill["completed"] and len(at_kill["running"]) <= 1
    foundry.use_registry(build_fake_registry())  # the in-process resume runs without sleeps
    return str(run_id), at_kill


def _assert_resumed_like_an_uninterrupted_run(
        foundry: Any, recipe_id: str, run_id: str, at_kill: dict[str, set[tuple[int, int]]]
) -> None:
    events = run_events(foundry, run_id)
    assert names(events)[-1] == "Completed"
    completions = Counter((e.cycle, e.index) for e in events
                          if type(e).__name__ == "StageCompleted")
    assert completions == Counter((c, i) for c, i, _ in PLAN)  # exactly one each
    attempts = [e.attempt for e in events if type(e).__name__ == "Started"]
    assert attempts == [1, 2]
    restarted = Counter((e.cycle, e.index) for e in events if type(e).__name__ == "StageStarted")
    for key in at_kill["completed"]:  # a completed stage whose outputs verify is not redone
        assert restarted[key] == 1, key
    for key in at_kill["running"]:  # the interrupted stage ran again
        assert restarted[key] == 2, key

    clean = forge(foundry, recipe_id)
    assert clean["runId"] != run_id
    assert stage_outputs(foundry, run_id) == stage_outputs(foundry, clean["runId"])
    doc = read_artifact(foundry, run_id)
    assert_alloy_hash_verifies(doc)
    assert [a["attempt"] for a in doc["provenance"]["attempts"]] == [1, 2]
    assert ok(foundry.execute("audit/replay", {"runId": run_id}))["ok"] is True


@pytest.mark.slow
def test_resume_after_a_killed_worker_completes_each_stage_once_with_the_same_outputs(
        foundry, recipe, monkeypatch):
    recipe_id = create_recipe(foundry, recipe)
    run_id, at_kill = _kill_mid_run(foundry, recipe_id, monkeypatch)
    resumed = ok(foundry.execute("forge/resume", {"runId": run_id, "wait": True}))
    assert resumed["status"] == "completed"
    _assert_resumed_like_an_uninterrupted_run(foundry, recipe_id, run_id, at_kill)
    refused = foundry.execute("forge/resume", {"runId": run_id})
    assert refused["success"] is False and "completed" in refused["error"]


@pytest.mark.slow
def test_repeating_forge_run_with_the_same_command_id_resumes_a_killed_run(
        foundry, recipe, monkeypatch):
    recipe_id = create_recipe(foundry, recipe)
    run_id, at_kill = _kill_mid_run(foundry, recipe_id, monkeypatch,
                                    commandId="forge-after-crash")
    again = forge(foundry, recipe_id, commandId="forge-after-crash")
    assert again["runId"] == run_id and again["repeated"] is True
    assert again["status"] == "completed"
    assert names(run_events(foundry, run_id)).count("Requested") == 1
    _assert_resumed_like_an_uninterrupted_run(foundry, recipe_id, run_id, at_kill)


def test_repeating_forge_run_while_its_worker_runs_starts_no_second_worker(
        foundry, recipe, monkeypatch):
    monkeypatch.setenv("FOUNDRY_FAKE_SLEEP", "1.5")
    recipe_id = create_recipe(foundry, recipe)
    first = forge(foundry, recipe_id, wait=False, commandId="forge-retried")
    pids = {first["workerPid"]}
    try:
        wait_for(lambda: running_stage(foundry, first["runId"], {0}), 30, "the first stage")
        again = forge(foundry, recipe_id, wait=False, commandId="forge-retried")
        pids.add(again.get("workerPid"))
        assert again["runId"] == first["runId"] and again["repeated"] is True
        assert again.get("workerPid") == first["workerPid"]  # the live owner, not a new one
    finally:
        for pid in pids - {None}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: process_gone(pid), 10, "the workers to go")


# --- the artifact view, replay and lineage ---------------------------------------------------

def test_rebuilding_the_artifact_view_gives_the_rows_incremental_updates_gave(foundry, recipe,
                                                                            store_url):
    recipe_id = create_recipe(foundry, recipe)
    # In-process runs execute here: for one run a process configured as that node.
    with as_node(store_url, foundry, "rtx-5090", "lab-2") as node:
        forge(node, recipe_id, hardwareNode="rtx-5090@lab-2")
    foundry.use_registry(build_fake_registry(fail_on="quant"))
    forge(foundry, recipe_id)
    foundry.use_registry(cancelling_registry(foundry, "lora", after_first_report=False))
    forge(foundry, recipe_id)

    def snapshot() -> list[dict[str, Any]]:
        return ok(foundry.execute("data/list", {"collection": A, "limit": 500,
                                                "orderBy": [{"field": "id"}]}))["items"]

    incremental = snapshot()
    assert Counter(i["status"] for i in incremental) == {"completed": 1, "failed": 1,
                                                          "cancelled": 1}
    stats = foundry.artifact_host.rebuild()
    assert stats.events > 0
    assert snapshot() == incremental


def _tamper(foundry: Any, run_id: str, version: int, state: bytes) -> None:
    if foundry.config.kind == "sqlite":
        with sqlite3.connect(foundry.config.sqlite_file("runs")) as conn:
            changed = conn.execute(
                "UPDATE stored_events SET state = ? WHERE originator_id = ? AND "
                "originator_version = ?", (state, UUID(run_id).hex, version)).rowcount
        assert changed == 1
        return
    table = f'"{foundry.config.pg_schema}".{foundry.runs.recorder.events_table_name}'
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        changed = conn.execute(
            f"UPDATE {table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
            (state, UUID(run_id), version)).rowcount
    assert changed == 1


def test_replay_detects_a_tampered_stored_event(foundry, recipe, store_url):
    from foundry.adapters.bootstrap import Foundry

    run_id = forge(foundry, create_recipe(foundry, recipe))["runId"]
    clean = ok(foundry.execute("audit/replay", {"runId": run_id}))  # right after the run
    assert clean["ok"] is True and clean["problems"] == []
    assert clean["replayedAlloyHash"] == clean["sealedAlloyHash"]

    stored = foundry.runs.recorder.select_events(UUID(run_id))
    target = [s for s in stored if s.topic.endswith(".StageCompleted")][-1]  # the eval
    body = json.loads(target.state)
    assert "finalPerplexity" in body["metrics"]
    body["metrics"]["finalPerplexity"] = round(body["metrics"]["finalPerplexity"] / 2, 4)
    _tamper(foundry, run_id, target.originator_version,
            json.dumps(body, separators=(",", ":")).encode())

    with Foundry.open(store_url) as fresh:
        replay = ok(fresh.execute("audit/replay", {"runId": run_id}))
    assert replay["ok"] is False
    assert replay["replayedAlloyHash"] != replay["sealedAlloyHash"] == clean["sealedAlloyHash"]
    problems = "\n".join(replay["problems"])
    assert "alloyHash: sealed" in problems
    assert "results.finalPerplexity" in problems
    assert "provenance.stages[7].metrics.finalPerplexity" in problems


def test_lineage_report_traces_an_artifact_a_run_and_a_recipe(foundry, recipe):
    root = create_recipe(foundry, recipe)
    middle = ok(foundry.execute("recipe/fork", {"id": root, "data": {"name": "fork-one"}}))["id"]
    leaf = ok(foundry.execute("recipe/fork", {"id": middle, "data": {"name": "fork-two"}}))["id"]
    ok(foundry.execute("data/update", {"collection": R, "id": leaf, "author": "bo",
                                       "data": {"description": "sharper"}}))
    first = forge(foundry, leaf)  # pins 0.1.0 at revision 3
    ok(foundry.execute("data/update", {"collection": R, "id": leaf,
                                       "data": {"version": "0.2.0", "cycles": 1}}))
    second = forge(foundry, leaf)

    by_artifact = ok(foundry.execute("lineage/report", {"id": first["artifactId"]}))
    by_run = ok(foundry.execute("lineage/report", {"id": first["runId"]}))
    by_recipe = ok(foundry.execute("lineage/report", {"id": leaf}))
    assert by_artifact["subject"]["kind"] == "artifact" and by_run["subject"]["kind"] == "run"
    assert by_recipe["subject"]["kind"] == "recipe"

    for report in (by_artifact, by_run, by_recipe):
        assert report["recipe"]["id"] == leaf and report["recipe"]["name"] == "fork-two"
        assert report["recipe"]["pinnedVersions"] == ["0.1.0", "0.2.0"]
        assert [(p["id"], p["name"]) for p in report["parents"]] == [
            (middle, "fork-one"), (root, recipe["name"])]
    for report in (by_artifact, by_run):
        run = report["runs"][0]
        assert [r["runId"] for r in report["runs"]] == [first["runId"]]
        assert [e["event"] for e in report["edits"]] == ["Forked", "Edited", "VersionPinned"]
        assert report["edits"][-1]["revision"] == run["recipeRevision"] == 3
    assert by_artifact["runs"] == by_run["runs"]
    assert [e["event"] for e in by_recipe["edits"]] == [
        "Forked", "Edited", "VersionPinned", "Edited", "VersionPinned"]
    assert [r["runId"] for r in by_recipe["runs"]] == [first["runId"], second["runId"]]
    assert [r["recipeVersion"] for r in by_recipe["runs"]] == ["0.1.0", "0.2.0"]

    run = by_artifact["runs"][0]
    doc = read_artifact(foundry, first["runId"])
    assert run["alloyHash"] == doc["alloyHash"] and run["status"] == "completed"
    assert run["source"]["sourceHash"] == run["stages"][0]["inputHash"]
    assert [(s["cycle"], s["index"], s["type"]) for s in run["stages"]] == PLAN
    for before, after in zip(run["stages"], run["stages"][1:], strict=False):
        assert after["inputHash"] == before["outputHash"]
    for stage, recorded in zip(run["stages"], doc["provenance"]["stages"], strict=True):
        assert stage["status"] == "completed"
        assert stage["startedAt"] <= stage["completedAt"] and stage["seconds"] >= 0
        assert stage["metrics"] == recorded["metrics"]
        assert stage["outputHash"] == recorded["outputHash"]
    assert run["stages"][-1]["metrics"]["finalPerplexity"] == doc["results"]["finalPerplexity"]
    assert len(by_recipe["runs"][1]["stages"]) == 5  # cycles 1 in version 0.2.0


# --- the aggregate's transitions (no store) --------------------------------------------------

AT = "2026-01-01T00:00:00+00:00"


def _running_run() -> ForgeRun:
    run = ForgeRun.request(
        id=uuid4(), recipe_id=str(uuid4()), recipe_version="0.1.0", recipe_revision=2,
        recipe_hash="sha256:" + "0" * 64, recipe={"stages": [{"type": "train"}]},
        hardware_node="cpu@local", publish_target=None, requested_by="", command_id=None, at=AT)
    run.start(worker_host="h", pid=1, software={}, device="cpu", at=AT)
    return run


def _complete(run: ForgeRun, index: int = 0) -> None:
    run.complete_stage(cycle=1, index=index, output_hash="sha256:" + "1" * 64, files=[],
                       metrics={}, notes=[], seconds=0.1, at=AT)


def _start(run: ForgeRun, index: int = 0) -> None:
    run.start_stage(cycle=1, index=index, stage_type="train", config={}, input_hash="h", at=AT)


def test_completing_a_stage_that_never_started_is_refused():
    run = _running_run()
    with pytest.raises(StageNotStartedError, match="never started"):
        _complete(run)
    with pytest.raises(StageNotStartedError):
        run.report_progress(cycle=1, index=0, fraction=0.5, message="", at=AT)
    assert run.state["stages"] == {}


def test_a_second_completion_of_a_stage_is_refused():
    run = _running_run()
    _start(run)
    _complete(run)
    version = run.version
    with pytest.raises(StageAlreadyCompletedError, match="is completed"):
        _complete(run)
    with pytest.raises(StageAlreadyCompletedError, match="already completed"):
        _start(run)
    assert run.version == version


ENDINGS: dict[str, Callable[[ForgeRun], None]] = {
    "failed": lambda r: r.fail(error_type="E", message="boom", at=AT),
    "cancelled": lambda r: r.cancel(by="ana", reason="stop", at=AT),
    "completed": lambda r: (
        r.record_benchmarks(benchmarks=[], at=AT),
        r.evaluate_gate(passed=True, reasons=[], at=AT),
        r.seal(alloy_hash="sha256:" + "2" * 64, at=AT),
        r.complete(at=AT)),
}
AFTERWARDS: dict[str, Callable[[ForgeRun], None]] = {
    "start": lambda r: r.start(worker_host="h", pid=2, software={}, device="cpu", at=AT),
    "start a stage": lambda r: _start(r, 1),
    "complete the open stage": _complete,
    "report progress": lambda r: r.report_progress(cycle=1, index=0, fraction=1.0, message="",
                                                   at=AT),
    "seal": lambda r: r.seal(alloy_hash="sha256:" + "3" * 64, at=AT),
    "fail": lambda r: r.fail(error_type="E", message="again", at=AT),
    "cancel": lambda r: r.cancel(by="", reason="", at=AT),
    "complete": lambda r: r.complete(at=AT),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_nothing_can_happen_to_a_run_after_it_ended(ending):
    for what, step in AFTERWARDS.items():
        run = _running_run()
        _start(run)
        if ending == "completed":
            _complete(run)
        ENDINGS[ending](run)
        assert run.status == ending
        version = run.version
        with pytest.raises(RunEndedError, match=f"the run is {ending}"):
            step(run)
        assert run.version == version, what
        assert issubclass(RunEndedError, RunStateError)


class _BrokenSafetensorsTrain:
    """A train stage whose output model is not readable safetensors (a disk filled mid-write,
    say): storing and counting its parameters must fail the stage, not crash the run."""

    stage_type = "train"

    def run(self, ctx: Any, reporter: Any) -> Any:
        from foundry.executors.base import StageResult

        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        (ctx.output_dir / "model.safetensors").write_bytes(b"\x05\x00")  # not even a length
        reporter.progress(1.0, "wrote a broken model")
        return StageResult(output_dir=ctx.output_dir)


def test_an_unreadable_stage_output_fails_that_stage_by_name_not_the_command(foundry, recipe):
    registry = build_fake_registry()
    registry.register(_BrokenSafetensorsTrain(), replace=True)  # type: ignore[arg-type]
    foundry.use_registry(registry)
    result = forge(foundry, create_recipe(foundry, recipe), reuse=False)
    assert result["status"] == "failed", result
    assert result["failure"]["type"] == "ValueError"
    assert result["failure"]["message"].startswith("model.safetensors: not a readable "
                                                   "safetensors file"), result
    events = run_events(foundry, result["runId"])
    assert names(events)[-2:] == ["StageFailed", "Failed"]
    assert (events[-2].cycle, events[-2].index) == (1, 1)
