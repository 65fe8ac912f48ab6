"""Drives one run: resolve the source, run each stage through its executor, seal.

Executors only report. Each step here is one aggregate command plus one save, so the store
always says exactly how far a run got; a process killed at any point leaves a run that
`resume` continues: completed stages whose outputs still verify are skipped, the interrupted
one is redone, and each (cycle, stage) ends with exactly one completion event.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from foundry.adapters.clock import utc_now
from foundry.adapters.runs.model_params import count_params
from foundry.adapters.runs.progress import RunReporter
from foundry.adapters.runs.publish_stages import publish_stages, stage_outcomes
from foundry.adapters.runs.stage_cache import (
    FingerprintParts,
    StageCache,
    corpus_hash,
    executor_code_version,
    recipe_reads,
    upstream_files,
    upstream_outputs,
)
from foundry.adapters.store.blobs import BlobStore, FileRecord, tree_hash
from foundry.adapters.store.forge_runs import ForgeRuns
from foundry.domain import run_state
from foundry.domain.artifact_builder import alloy_hash, build_artifact
from foundry.domain.errors import RunEndedError
from foundry.domain.forge_run import ForgeRun
from foundry.domain.gate import evaluate_gate
from foundry.domain.implied_steps import PUBLISH_TYPES, implied_steps
from foundry.executors.base import StageContext, StageResult
from foundry.executors.errors import StageCancelledError
from foundry.executors.registry import ExecutorRegistry

if TYPE_CHECKING:
    from foundry.adapters.publishing.attestation import KeyInfo
    from foundry.adapters.publishing.ports import PublishServices
    from foundry.adapters.settings import KeySettings

log = structlog.get_logger()

# Stages that change the model repeat once per cycle; the others run once, in the last cycle.
TRANSFORM_STAGES = frozenset({
    "prune", "train", "lora", "context-extend", "compensation-lora", "expert-prune", "modality",
    "compact", "expert-activation-profile",
})

ProgressListener = Callable[[dict[str, Any]], None]
STAGE_SEED = 0  # every stage's seed today; part of the stage cache's fingerprint


def plan(recipe: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """(cycle, index, stage) in execution order: the recipe's stages (publish stages are
    carried out after the seal, not here), then the steps its quantTiers and
    evaluationBenchmarks imply (domain/implied_steps.py), numbered after its last stage."""
    cycles = int(recipe.get("cycles", 1))
    stages = recipe.get("stages", [])
    steps = [
        (cycle, index, stage)
        for cycle in range(1, cycles + 1)
        for index, stage in enumerate(stages)
        if stage["type"] not in PUBLISH_TYPES
        and (cycle == cycles or stage["type"] in TRANSFORM_STAGES)
    ]
    steps += [(cycles, len(stages) + k, step) for k, step in enumerate(implied_steps(recipe))]
    return steps


def software_versions() -> dict[str, str]:
    """Versions from package metadata: no heavy import just to learn a version."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("foundry", "torch", "transformers", "peft", "gguf", "llama-cpp-python"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    # llama.cpp's GGUF converter lives outside site-packages (it bundles its own gguf).
    from foundry.executors.real.gguf_convert import CONVERTER, converter_version

    if (converter := converter_version()) is not None:
        versions[CONVERTER] = converter
    return versions


def _first_of_each(benchmarks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (name, subset): an implied eval that also reports a benchmark an
    earlier eval stage scored (perplexity, say) does not list it twice."""
    seen: set[tuple[Any, Any]] = set()
    kept = []
    for b in benchmarks:
        key = (b.get("name"), b.get("subset"))
        if key not in seen:
            seen.add(key)
            kept.append(b)
    return kept


@dataclass
class RunOutcome:
    run_id: str
    status: str
    alloy_hash: str | None = None
    error: str | None = None
    publications: list[dict[str, Any]] = field(default_factory=list)  # its publish stages


class Orchestrator:
    """Executes runs of one store with one executor registry."""

    def __init__(self, runs: ForgeRuns, registry: ExecutorRegistry, blobs: BlobStore,
                 state_dir: Path, *, progress_interval: float = 5.0,
                 listener: ProgressListener | None = None,
                 node: dict[str, str] | None = None,
                 publishing: PublishServices | None = None,
                 signing: str, keys: KeySettings) -> None:
        self.runs, self.registry, self.blobs = runs, registry, blobs
        # The system publish stages publish through (forge/publish's path); without it a
        # run leaves them pending, for whoever asked for the run (forge/run) to carry out.
        self.publishing = publishing
        self.node = node  # the cluster node this executes on (recorded with each attempt)
        self.signing = signing  # Settings.signing: auto, existing or off
        self.keys = keys  # Settings.keys: where the key is, what unlocks it
        self.state_dir, self.progress_interval = state_dir, progress_interval
        self.listener = listener or (lambda _event: None)
        self.cache = StageCache(runs, blobs)  # completed stages anywhere in this store

    def heartbeat_path(self, run_id: UUID) -> Path:
        return self.state_dir / "heartbeats" / str(run_id)

    def execute(self, run_id: UUID) -> RunOutcome:
        run = self.runs.get_run(run_id)
        if run.ended:
            if run.status == "completed":  # publish stages not tried before a crash
                self._publish(run_id)
            return self._outcome(self.runs.get_run(run_id))
        structlog.contextvars.bind_contextvars(run_id=str(run_id))
        try:
            if run.status != "sealed":
                attempt = self.runs.record(run_id, lambda r: r.start(
                    worker_host=socket.gethostname(), pid=os.getpid(),
                    software=software_versions(), device=self.registry.device, at=utc_now(),
                    node=self.node))
                log.info("run_started", attempt=attempt)
                work = self.state_dir / "work" / str(run_id) / f"attempt-{attempt}"
                try:
                    if not self._run_stages(run_id, work):
                        return self._outcome(self.runs.get_run(run_id))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                self._seal(run_id)
            else:
                self._sign_sealed(run_id)
            self.runs.record(run_id, lambda r: r.complete(at=utc_now()))
            self._publish(run_id)
        except RunEndedError:
            # Cancelled (or failed) by another process while this one was between a step and
            # its record: the store already says how the run ended; this worker just stops.
            log.info("run_ended_elsewhere")
            return self._outcome(self.runs.get_run(run_id))
        finally:
            structlog.contextvars.unbind_contextvars("run_id")
        outcome = self._outcome(self.runs.get_run(run_id))
        log.info("run_completed", alloy_hash=outcome.alloy_hash)
        return outcome

    # --- stages --------------------------------------------------------------------------

    def _run_stages(self, run_id: UUID, work: Path) -> bool:
        """True when every stage completed; False when the run failed or was cancelled."""
        run = self.runs.get_run(run_id)
        source = self._source(run_id, run, work)
        if source is None:
            return False
        base_dir, current_hash = source
        current_dir = base_dir
        for cycle, index, stage in plan(run.state["recipe"]):
            record = self.runs.get_run(run_id).stage(cycle, index)
            if record is not None and record["status"] == "completed":
                reused = self._reuse(record, work / f"c{cycle}-s{index}")
                if reused is not None:
                    current_dir, current_hash = reused, record["outputHash"]
                    self.listener({"kind": "stage_skipped", "cycle": cycle, "index": index,
                                   "type": stage["type"]})
                    continue
            current = self.runs.get_run(run_id)
            if current.ended:
                return False  # cancelled between stages
            fingerprint = self._fingerprint(current, cycle, index, stage, current_hash)
            if current.state.get("reuse", True):  # forge/run reuse: false (--no-reuse) skips
                taken = self._take_cached(run_id, work, cycle, index, stage, current_hash,
                                          fingerprint)
                if taken is not None:
                    current_dir, current_hash = taken
                    continue
            step = self._run_stage(run_id, work, cycle, index, stage, current_dir, current_hash,
                                   base_dir, fingerprint)
            if step is None:
                return False
            current_dir, current_hash = step
        return True

    def _source(self, run_id: UUID, run: ForgeRun, work: Path) -> tuple[Path, str] | None:
        recorded = run.state["source"]
        target = work / "source"
        if recorded is not None:
            records = [FileRecord.from_dict(f) for f in recorded["files"]]
            if not self.blobs.verify_records(records):
                self.blobs.materialize(records, target)
                return target, recorded["sourceHash"]
        recipe_source = run.state["recipe"]["source"]
        try:
            resolved = self.registry.source_resolver(recipe_source)
            # put_dir refuses a symlink out of the source (BlobSourceError): the run fails
            # naming the file, like any source that cannot be resolved.
            records = self.blobs.put_dir(resolved, role="source")
        except Exception as e:
            self._fail_run(run_id, e)
            return None
        source_hash = tree_hash(records)
        self.runs.record(run_id, lambda r: r.resolve_source(
            base_model=str(recipe_source.get("baseModel")), source_hash=source_hash,
            files=[f.to_dict() for f in records], at=utc_now()))
        self.blobs.materialize(records, target)
        return target, source_hash

    def _reuse(self, record: dict[str, Any], dest: Path) -> Path | None:
        """The model a completed stage left, if every output still verifies; else None."""
        records = [FileRecord.from_dict(f) for f in record["files"]]
        if self.blobs.verify_records(records):
            return None
        self.blobs.materialize([r for r in records if r.role == "model"], dest)
        return dest

    def _fingerprint(self, run: ForgeRun, cycle: int, index: int, stage: dict[str, Any],
                     input_hash: str) -> str:
        """The stage cache key: see adapters/runs/stage_cache.py for what it covers."""
        return FingerprintParts(
            input_hash=input_hash, config=stage,
            corpus_hash=corpus_hash(run.state["recipe"]),
            executor_code=executor_code_version(self.registry.get(stage["type"])),
            libraries=software_versions(), seed=STAGE_SEED,
            device_class=self.registry.device,
            base_hash=(run.state["source"] or {}).get("sourceHash"),
            upstream_outputs=tuple(upstream_outputs(run.state, cycle, index)),
            recipe_reads=recipe_reads(stage["type"], run.state["recipe"]),
        ).fingerprint()

    def _take_cached(self, run_id: UUID, work: Path, cycle: int, index: int,
                     stage: dict[str, Any], input_hash: str,
                     fingerprint: str) -> tuple[Path, str] | None:
        """Complete the stage with the verified outputs of a completed stage of the same
        fingerprint (StageReused names where they came from); None when there is none."""
        cached = self.cache.find(fingerprint)
        if cached is None:
            return None
        record, origin = cached.record, cached.origin
        dest = work / f"c{cycle}-s{index}"
        shutil.rmtree(dest, ignore_errors=True)
        self.blobs.materialize(
            [FileRecord.from_dict(f) for f in record["files"] if f.get("role") == "model"], dest)
        self.runs.record(run_id, lambda r: r.reuse_stage(
            cycle=cycle, index=index, stage_type=stage["type"], config=stage,
            input_hash=input_hash, fingerprint=fingerprint, reused_from=origin,
            output_hash=record["outputHash"], files=record["files"],
            metrics=record.get("metrics") or {}, notes=record.get("notes") or [],
            at=utc_now()))
        log.info("stage_reused", cycle=cycle, index=index, type=stage["type"], **{
            "from_run": origin["runId"], "from_cycle": origin["cycle"],
            "from_index": origin["index"]})
        self.listener({"kind": "stage_reused", "cycle": cycle, "index": index,
                       "type": stage["type"], "from": origin})
        return dest, str(record["outputHash"])

    def _run_stage(self, run_id: UUID, work: Path, cycle: int, index: int,
                   stage: dict[str, Any], input_dir: Path, input_hash: str,
                   base_dir: Path, fingerprint: str | None = None) -> tuple[Path, str] | None:
        self.runs.record(run_id, lambda r: r.start_stage(
            cycle=cycle, index=index, stage_type=stage["type"], config=stage,
            input_hash=input_hash, at=utc_now(), fingerprint=fingerprint))
        self.listener({"kind": "stage_started", "cycle": cycle, "index": index,
                       "type": stage["type"]})
        out, scratch = work / f"c{cycle}-s{index}", work / f"c{cycle}-s{index}.scratch"
        for d in (out, scratch):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        run = self.runs.get_run(run_id)
        ctx = StageContext(
            run_id=str(run_id), cycle=cycle, index=index, stage=stage,
            recipe=run.state["recipe"], input_dir=input_dir, output_dir=out, work_dir=scratch,
            base_model_dir=base_dir, seed=STAGE_SEED, device=self.registry.device,
            # a stage may read a stored output by hash (expert-prune's importanceJson), or
            # an earlier stage's output file of this run (eval's GGUF tier)
            extras={"blobPath": self.blobs.path_of,
                    "upstreamFiles": upstream_files(run.state, cycle, index)},
        )
        reporter = RunReporter(self.runs, run_id, cycle, index, self.progress_interval,
                               self.heartbeat_path(run_id), self.listener, utc_now)
        started = time.perf_counter()
        try:
            result = self.registry.get(stage["type"]).run(ctx, reporter)
            seconds = round(time.perf_counter() - started, 3)
            # Storing and reading back what the stage wrote (its blobs, its parameter count
            # from the safetensors headers) can fail on a broken output: that is this stage
            # failing, named, not a crash of the run.
            return self._complete(run_id, cycle, index, result, seconds)
        except StageCancelledError:
            return None
        except Exception as e:
            log.exception("stage_failed", cycle=cycle, index=index, type=stage["type"])
            error_type, message = type(e).__name__, str(e)
            self.runs.record(run_id, lambda r: r.fail_stage(
                cycle=cycle, index=index, error_type=error_type, message=message,
                at=utc_now()))
            self._fail_run(run_id, e)
            return None

    def _complete(self, run_id: UUID, cycle: int, index: int, result: StageResult,
                  seconds: float) -> tuple[Path, str]:
        model = self.blobs.put_dir(result.output_dir, role="model")
        extras = [self._store_extra(p) for p in result.files]
        output_hash = tree_hash(model)
        # The parameter counts of the model the stage wrote, from its own files, so that the
        # artifact's forgedParamsB (and activeParamsB of a MoE) never depend on an executor
        # remembering to report them.
        metrics = {**(count_params(result.output_dir) or {}), **result.metrics}
        self.runs.record(run_id, lambda r: r.complete_stage(
            cycle=cycle, index=index, output_hash=output_hash,
            files=[f.to_dict() for f in [*model, *extras]], metrics=metrics,
            notes=list(result.notes), seconds=seconds, at=utc_now()))
        self.listener({"kind": "stage_completed", "cycle": cycle, "index": index,
                       "seconds": seconds, "metrics": dict(metrics)})
        return result.output_dir, output_hash

    def _store_extra(self, path: Path) -> FileRecord:
        ref = self.blobs.put_file(path)
        return FileRecord(path=path.name, sha256=ref.sha256, size=ref.size, role="output")

    # --- end of a run --------------------------------------------------------------------

    def _seal(self, run_id: UUID) -> None:
        run = self.runs.get_run(run_id)
        benchmarks = _first_of_each([b for r in run_state.completed_stages(run.state)
                                     for b in r["metrics"].get("benchmarks", [])])
        self.runs.record(run_id, lambda r: r.record_benchmarks(benchmarks=benchmarks,
                                                               at=utc_now()))
        passed, reasons = evaluate_gate(run.state["recipe"], benchmarks)
        self.runs.record(run_id, lambda r: r.evaluate_gate(passed=passed, reasons=reasons,
                                                           at=utc_now()))

        sign = self._signer()

        def seal(r: ForgeRun) -> str:
            at = utc_now()
            preview = run_state.apply(r.state, "Sealed", {"alloy_hash": None, "at": at})
            digest = alloy_hash(build_artifact(preview))
            r.seal(alloy_hash=digest, at=at)
            # Signed in the same save as Sealed (#17 item 3): a crash between the two used to
            # leave the run sealed and unsigned for good. Either both are stored or neither.
            sign(r)
            return digest

        self.runs.record(run_id, seal)

    def _signer(self) -> Callable[[ForgeRun], None]:
        """Signs a sealed run's artifact with this machine's key (Settings.signing: `auto`
        creates it on first use, `existing` signs only when there is one, `off` never);
        does nothing when the run is signed already."""
        from foundry.adapters.publishing.attestation import sign_artifact

        # Looked up (and under `auto` created) once per signer, and only when a run is sealed
        # unsigned: resuming a run that is signed already never creates a key.
        key_once = functools.cache(self._signing_key)

        def sign(r: ForgeRun) -> None:
            if r.state.get("integrity"):
                return
            key = key_once()
            if key is None:
                return
            private_key, info = key
            at = utc_now()
            integrity = sign_artifact(build_artifact(r.state), model_dir=None,
                                      private_key=private_key, key_info=info, attested_at=at)
            r.sign(integrity=integrity, at=at)
            log.info("artifact_signed", key_id=info.key_id)

        return sign

    def _signing_key(self) -> tuple[Any, KeyInfo] | None:
        from foundry.adapters.publishing.attestation import signing_key

        key, created = signing_key(self.signing, self.keys)
        if created is not None:
            log.info("signing_key_created", key_id=created.key_id,
                     directory=str(created.directory))
        return key

    def _sign_sealed(self, run_id: UUID) -> None:
        """A run sealed before signing joined the seal step (or before a key existed) is
        signed when it is resumed, before it completes."""
        self.runs.record(run_id, self._signer())

    def _publish(self, run_id: UUID) -> None:
        """Carry out the recipe's publish stages on the completed run (publish_stages.py)."""
        if self.publishing is None:
            return
        outcomes = publish_stages(self.publishing, run_id)
        for outcome in outcomes:
            log.info("publish_stage", **outcome)
            self.listener({"kind": "publish_stage", **outcome})

    def _fail_run(self, run_id: UUID, error: Exception) -> None:
        self.runs.record(run_id, lambda r: None if r.ended else r.fail(
            error_type=type(error).__name__, message=str(error), at=utc_now()))

    def _outcome(self, run: ForgeRun) -> RunOutcome:
        failure = run.state["failure"]
        return RunOutcome(run_id=str(run.id), status=run.status,
                          alloy_hash=run.state["alloyHash"],
                          error=failure["message"] if failure else None,
                          publications=stage_outcomes(run.state))
