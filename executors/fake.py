"""Deterministic fake executors for orchestration tests: no torch, outputs a pure function.

Every fake stage reads each file of `ctx.input_dir` and writes the same relative path to
`ctx.output_dir` with bytes ``sha256(input + canonical_json(stage) + canonical_json(cycle))``
repeated to the input's length, so an output depends only on the input bytes, the stage config
and the cycle. Metrics are derived from one digest of all of that. Each stage reports progress
three times, sleeping `sleep_seconds / 3` before each report, so a test can kill a worker
mid-stage; `fail_on` makes one stage type raise after its first report.

`resolve_fake_source` turns ``source.baseModel = "fake://<name>"`` into a small model directory
(``config.json`` and ``model.bin`` derived from the name) under ``$FOUNDRY_FAKE_MODELS``, or
under the system temp dir when that is unset.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.domain.hashing import canonical_json
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError, SourceNotFoundError
from foundry.executors.quant_tiers import GGUF_TYPES, requested_types, unproducible_tiers
from foundry.executors.registry import ExecutorRegistry

FAKE_STAGE_TYPES = ("prune", "train", "lora", "context-extend", "quant", "eval")
FAKE_BENCHMARKS = frozenset({"perplexity", "fake-code"})
FAKE_SCHEME = "fake://"
_FAKE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_FAKE_MODEL_BYTES = 4096


def _stretch(seed: bytes, length: int) -> bytes:
    """`seed` repeated and cut to `length` bytes."""
    return (seed * (length // len(seed) + 1))[:length]


def _unit(digest: bytes, k: int) -> float:
    """The k-th (0..7) deterministic number in [0, 1) drawn from a 32-byte digest."""
    return int.from_bytes(digest[4 * k : 4 * k + 4], "big") / 2**32


def _fake_models_root() -> Path:
    configured = os.environ.get("FOUNDRY_FAKE_MODELS")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "foundry-fake-models"


def _write_fake_model(target: Path, name: str) -> None:
    config = {"architectures": ["FakeForCausalLM"], "model_type": "fake", "name": name}
    target.mkdir(parents=True)
    (target / "config.json").write_bytes(canonical_json(config))
    seed = hashlib.sha256(f"fake-model:{name}".encode()).digest()
    (target / "model.bin").write_bytes(_stretch(seed, _FAKE_MODEL_BYTES))


def resolve_fake_source(source: Mapping[str, Any]) -> Path:
    """`fake://<name>` -> a deterministic model directory, created once (atomically)."""
    base_model = str(source.get("baseModel", ""))
    name = base_model.removeprefix(FAKE_SCHEME)
    if not base_model.startswith(FAKE_SCHEME) or not _FAKE_NAME.fullmatch(name):
        raise SourceNotFoundError(base_model, ["fake:// models"])
    root = _fake_models_root()
    target = root / name
    if not (target / "model.bin").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".fake-"))
        try:
            _write_fake_model(staging / "model", name)
            try:
                os.rename(staging / "model", target)
            except OSError:
                if not (target / "model.bin").is_file():  # not just another writer winning
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class _Inputs:
    files: list[tuple[str, bytes]]  # (relative posix path, bytes), sorted
    salt: bytes  # canonical JSON of the stage config, then of the cycle
    digest: bytes  # one digest of every input file, the config and the cycle


def _read_inputs(ctx: StageContext) -> _Inputs:
    files = sorted(
        (path.relative_to(ctx.input_dir).as_posix(), path.read_bytes())
        for path in ctx.input_dir.rglob("*")
        if path.is_file()
    )
    salt = canonical_json(dict(ctx.stage)) + canonical_json(ctx.cycle)
    digest = hashlib.sha256()
    for rel, data in files:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(salt)
    return _Inputs(files=files, salt=salt, digest=digest.digest())


def _no_metrics(
    ctx: StageContext, inputs: _Inputs  # noqa: ARG001 (one signature for every finisher)
) -> tuple[list[Path], dict[str, Any]]:
    return [], {}


def _prune_metrics(
    ctx: StageContext, inputs: _Inputs  # noqa: ARG001 (one signature for every finisher)
) -> tuple[list[Path], dict[str, Any]]:
    return [], {"sparsity": float(ctx.stage.get("level", 0.0))}


def _train_metrics(
    ctx: StageContext, inputs: _Inputs  # noqa: ARG001 (one signature for every finisher)
) -> tuple[list[Path], dict[str, Any]]:
    return [], {"finalLoss": round(1.0 + 2.0 * _unit(inputs.digest, 0), 6)}


def _quant_outputs(ctx: StageContext, inputs: _Inputs) -> tuple[list[Path], dict[str, Any]]:
    """One GGUF file per requested type (the stage's quantTypes, then every gguf quantTiers
    variant, as the real quant stage reads them), reported as the real one reports them."""
    quant_types = requested_types(ctx.stage, ctx.recipe) or ["Q8_0"]
    unknown = [t for t in quant_types if t not in GGUF_TYPES]
    if unknown:
        raise ExecutorError(f"unknown quant types {unknown}; supported: {sorted(GGUF_TYPES)}")
    size = max(1, sum(len(data) for _rel, data in inputs.files))
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    tensor_types: dict[str, dict[str, int]] = {}
    verified: list[dict[str, Any]] = []
    for quant_type in quant_types:
        path = ctx.work_dir / f"model-{quant_type}.gguf"
        seed = hashlib.sha256(inputs.digest + quant_type.encode()).digest()
        path.write_bytes(_stretch(seed, size))
        files.append(path)
        tensor_types[quant_type] = {quant_type: len(inputs.files)}
        verified.append({
            "device": ctx.device, "format": f"gguf-{quant_type}", "sizeGb": size / 1e9,
            "tokensPerSec": 100.0, "verified": True, "tensorTypes": tensor_types[quant_type],
        })
    sizes = {t: size / 1e9 for t in quant_types}
    return files, {"tensorTypes": tensor_types, "hardwareVerified": verified,
                   "ggufSizes": sizes, "finalSizeGb": min(sizes.values())}


def _benchmark_names(stage: Mapping[str, Any]) -> list[str]:
    names = ["perplexity"]
    for entry in stage.get("benchmarks") or []:
        name = str(entry.get("name", "")) if isinstance(entry, Mapping) else str(entry)
        if name not in FAKE_BENCHMARKS:
            raise ExecutorError(
                f"unknown benchmark {name!r}; the fake eval knows {sorted(FAKE_BENCHMARKS)}"
            )
        if name not in names:
            names.append(name)
    return names


def _eval_metrics(ctx: StageContext, inputs: _Inputs) -> tuple[list[Path], dict[str, Any]]:
    d = inputs.digest
    base = round(10.0 + 40.0 * _unit(d, 0), 4)
    final = round(base * (0.6 + 0.35 * _unit(d, 1)), 4)
    benchmarks: list[dict[str, Any]] = []
    for name in _benchmark_names(ctx.stage):
        if name == "perplexity":
            score, base_score, metric = final, base, "perplexity"
        else:
            score, base_score, metric = round(_unit(d, 2), 4), round(_unit(d, 3), 4), "pass@1"
        benchmarks.append({
            "name": name, "metric": metric, "score": score, "baseScore": base_score,
            "delta": round(score - base_score, 4),
        })
    return [], {
        "baselinePerplexity": base,
        "finalPerplexity": final,
        "improvementPct": round((base - final) / base * 100.0, 4),
        "benchmarks": benchmarks,
    }


_Finisher = Callable[[StageContext, _Inputs], tuple[list[Path], dict[str, Any]]]
_FINISHERS: dict[str, _Finisher] = {
    "prune": _prune_metrics,
    "train": _train_metrics,
    "lora": _no_metrics,
    "context-extend": _no_metrics,
    "quant": _quant_outputs,
    "eval": _eval_metrics,
}


@dataclass  # not frozen: StageExecutor declares `stage_type` a settable attribute
class FakeExecutor:
    """One deterministic fake stage; see the module docstring."""

    stage_type: str
    sleep_seconds: float = 0.0
    fail: bool = False

    @property
    def fingerprint_settings(self) -> str:
        """What makes this instance produce other results than another of its class: an
        injected failure (the stage cache must not reuse a success for it); sleeping does not."""
        return "fail" if self.fail else ""

    def _pause(self) -> None:
        if self.sleep_seconds > 0:
            time.sleep(self.sleep_seconds / 3)

    def unproducible_tiers(self, tiers: Any) -> list[str]:
        """The quantTiers the fake quant cannot write: what the real one refuses (any format
        but gguf, a variant llama.cpp does not know), by the same rule."""
        return unproducible_tiers(tiers, lambda: GGUF_TYPES)

    def produced_tiers(self, stage: Mapping[str, Any], recipe: Mapping[str, Any]
                       ) -> frozenset[str]:
        """The tiers the fake quant writes: the requested types, else Q8_0 (_quant_outputs)."""
        return frozenset(requested_types(stage, recipe) or ["Q8_0"])

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        self._pause()
        inputs = _read_inputs(ctx)
        reporter.progress(1 / 3, f"read {len(inputs.files)} files")
        if self.fail:
            raise RuntimeError(f"injected failure in {self.stage_type}")

        self._pause()
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        for rel, data in inputs.files:
            target = ctx.output_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_stretch(hashlib.sha256(data + inputs.salt).digest(), len(data)))
        reporter.progress(2 / 3, f"wrote {len(inputs.files)} files")

        self._pause()
        files, metrics = _FINISHERS[self.stage_type](ctx, inputs)
        reporter.progress(1.0, "done")
        return StageResult(output_dir=ctx.output_dir, files=tuple(files), metrics=metrics)


def build_fake_registry(
    *, sleep_seconds: float = 0.0, fail_on: str | None = None
) -> ExecutorRegistry:
    """A registry of fake executors for every stage type in FAKE_STAGE_TYPES."""
    if fail_on is not None and fail_on not in FAKE_STAGE_TYPES:
        raise ValueError(f"fail_on={fail_on!r} names no fake stage type {FAKE_STAGE_TYPES}")
    return ExecutorRegistry(
        (
            FakeExecutor(stage_type, sleep_seconds=sleep_seconds, fail=fail_on == stage_type)
            for stage_type in FAKE_STAGE_TYPES
        ),
        known_benchmarks=FAKE_BENCHMARKS,
        source_resolver=resolve_fake_source,
    )
