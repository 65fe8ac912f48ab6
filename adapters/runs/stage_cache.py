"""The stage cache (issue #14 item 3): a completed stage is reused by content, never by name.

A stage's fingerprint hashes everything that decides what it writes: the model it starts from
(its input hash), its config without `notes` (prose), the calibration corpus's content hash,
the executor's code (the hash of the module that defines it), the versions of the libraries
the forge runs with, the seed and the device class; and, because a stage reads more than its
input model, the base model's hash (eval's compareToBase reads it), the files earlier stages
of the run produced besides their model (eval reads quant's GGUF tiers) and the recipe fields
its executor reads (RECIPE_READS: quant reads quantTiers). Two stages with one fingerprint compute
the same thing, so the second may take the first one's outputs, provided every one of those
outputs still hashes to what was recorded: a blob that fails its check is never reused.

The store's events are the index: each StageStarted (and StageReused) records its
fingerprint, and `StageCache.find` reads them from the runs' notification log (only those
two topics, incrementally), then trusts nothing it has not re-checked on the run itself.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from foundry.adapters.store.blobs import BlobStore, FileRecord
from foundry.adapters.store.forge_runs import ForgeRuns
from foundry.domain.forge_run import ForgeRun
from foundry.domain.hashing import content_hash
from foundry.domain.run_state import State

# Prose about a stage: changing it changes nothing the stage computes.
IGNORED_CONFIG_KEYS = frozenset({"notes"})
# Recipe fields (besides the corpus, hashed on its own) that a stage type's executor reads
# from StageContext.recipe. An executor that starts reading another field must be named here,
# or two stages that differ in it would share a fingerprint.
RECIPE_READS: dict[str, tuple[str, ...]] = {
    "quant": ("quantTiers",),
    "source-config": ("stages",),  # it looks ahead for a later context-extend
}
_TOPICS = (ForgeRun.StageStarted.TOPIC, ForgeRun.StageReused.TOPIC)
_PAGE = 500


def executor_code_version(executor: object) -> str:
    """sha256 of the source file of the module defining the executor's class: an edit to the
    executor makes every fingerprint it takes part in new."""
    try:
        source = inspect.getsourcefile(type(executor))
    except TypeError:  # a builtin: no file to hash
        source = None
    if source is None:
        code = f"{type(executor).__module__}.{type(executor).__qualname__}"
    else:
        code = "sha256:" + hashlib.sha256(Path(source).read_bytes()).hexdigest()
    # Settings of an executor instance that change what it produces (the fakes' injected
    # failure, say) are part of its code: the same class configured otherwise is other code.
    settings = getattr(executor, "fingerprint_settings", None)
    return code if not settings else f"{code};{settings}"


def recipe_reads(stage_type: str, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe fields a stage of this type reads (RECIPE_READS), as they are."""
    return {name: recipe.get(name) for name in RECIPE_READS.get(stage_type, ())}


def upstream_files(state: State, cycle: int, index: int) -> list[dict[str, Any]]:
    """Every file (not the model) that completed stages before (cycle, index) of this run
    produced, in stage order, as {path, sha256, type, cycle, index}: what a later stage may
    read besides its input (eval reads a GGUF tier from here)."""
    earlier = sorted((r for r in state["stages"].values() if r.get("status") == "completed"
                      and (r["cycle"], r["index"]) < (cycle, index)),
                     key=lambda r: (r["cycle"], r["index"]))
    return [{"path": f["path"], "sha256": f["sha256"], "type": r.get("type"),
             "cycle": r["cycle"], "index": r["index"]}
            for r in earlier for f in r.get("files") or [] if f.get("role") == "output"]


def upstream_outputs(state: State, cycle: int, index: int) -> list[str]:
    """`path=sha256` of each of upstream_files: part of every stage's fingerprint."""
    return [f"{f['path']}={f['sha256']}" for f in upstream_files(state, cycle, index)]


def corpus_hash(recipe: Mapping[str, Any]) -> str | None:
    """The content hash of the recipe's calibration corpus, or None when it names none."""
    corpus = recipe.get("calibrationCorpus")
    if not isinstance(corpus, Mapping):
        return None
    value = corpus.get("contentHash") or corpus.get("hash")
    return str(value) if value else None


@dataclass(frozen=True)
class FingerprintParts:
    """What a stage's fingerprint is made of, each part named (tests change one at a time)."""

    input_hash: str
    config: Mapping[str, Any]
    corpus_hash: str | None
    executor_code: str
    libraries: Mapping[str, str]
    seed: int
    device_class: str
    base_hash: str | None = None
    upstream_outputs: tuple[str, ...] = ()
    recipe_reads: Mapping[str, Any] | None = None

    def fingerprint(self) -> str:
        config = {k: v for k, v in self.config.items() if k not in IGNORED_CONFIG_KEYS}
        return content_hash({
            "inputHash": self.input_hash, "config": config, "corpusHash": self.corpus_hash,
            "executorCode": self.executor_code, "libraries": dict(self.libraries),
            "seed": self.seed, "deviceClass": self.device_class, "baseHash": self.base_hash,
            "upstreamOutputs": list(self.upstream_outputs),
            "recipeReads": dict(self.recipe_reads or {}),
        })


@dataclass(frozen=True)
class CachedStage:
    """A completed stage whose outputs all verified: where it was computed and what it left."""

    run_id: str
    record: dict[str, Any]

    @property
    def origin(self) -> dict[str, Any]:
        """The stage that computed these outputs (a reused stage points at its own origin)."""
        first = self.record.get("reusedFrom")
        if isinstance(first, Mapping):
            return dict(first)
        return {"runId": self.run_id, "cycle": self.record["cycle"],
                "index": self.record["index"], "type": self.record["type"]}


class StageCache:
    """Finds a completed stage by fingerprint anywhere in one store's runs."""

    def __init__(self, runs: ForgeRuns, blobs: BlobStore) -> None:
        self.runs, self.blobs = runs, blobs
        self._position = 0  # the last notification read
        self._index: dict[str, list[tuple[UUID, int, int]]] = {}

    def _catch_up(self) -> None:
        while True:
            notes = self.runs.recorder.select_notifications(
                start=self._position + 1, limit=_PAGE, topics=_TOPICS)
            if not notes:
                return
            for note in notes:
                event = self.runs.mapper.to_domain_event(note)
                if not isinstance(event, ForgeRun.StageStarted | ForgeRun.StageReused):
                    continue
                fingerprint = getattr(event, "fingerprint", None)  # absent in older events
                if fingerprint:
                    self._index.setdefault(fingerprint, []).append(
                        (event.originator_id, event.cycle, event.index))
            self._position = notes[-1].id
            if len(notes) < _PAGE:
                return

    def find(self, fingerprint: str) -> CachedStage | None:
        """The newest completed stage with this fingerprint whose outputs all verify."""
        self._catch_up()
        for run_id, cycle, index in reversed(self._index.get(fingerprint, [])):
            record = self.runs.get_run(run_id).stage(cycle, index)
            if record is None or record.get("status") != "completed" \
                    or record.get("fingerprint") != fingerprint:
                continue  # started but failed, cancelled, or re-run under another print
            records = [FileRecord.from_dict(f) for f in record.get("files") or []]
            if not records or self.blobs.verify_records(records):
                continue  # a blob missing or changed: never reused
            return CachedStage(str(run_id), record)
        return None
