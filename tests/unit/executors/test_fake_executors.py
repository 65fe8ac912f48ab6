"""The fake executors: pure functions of input and config, progress, injected failures."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.store.blobs import hash_dir
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import (
    CorpusHashMismatchError,
    ExecutorError,
    NoExecutorError,
    SourceNotFoundError,
    StageCancelledError,
)
from foundry.executors.fake import FAKE_STAGE_TYPES, build_fake_registry, resolve_fake_source
from foundry.executors.registry import ExecutorRegistry

STAGES: dict[str, dict[str, Any]] = {
    "prune": {"type": "prune", "strategy": "magnitude", "level": 0.3},
    "train": {"type": "train", "steps": 30, "learningRate": "3e-3"},
    "lora": {"type": "lora", "rank": 8, "alpha": 16},
    "context-extend": {"type": "context-extend", "targetLength": 8192},
    "quant": {"type": "quant", "format": "gguf", "quantTypes": ["Q8_0", "Q4_K_M"]},
    "eval": {"type": "eval", "benchmarks": [{"name": "perplexity"}, {"name": "fake-code"}]},
}
CHANGED: dict[str, dict[str, Any]] = {
    "prune": {**STAGES["prune"], "level": 0.5},
    "train": {**STAGES["train"], "steps": 31},
    "lora": {**STAGES["lora"], "rank": 16},
    "context-extend": {**STAGES["context-extend"], "targetLength": 16384},
    "quant": {**STAGES["quant"], "quantTypes": ["Q8_0"]},
    "eval": {**STAGES["eval"], "benchmarks": [{"name": "perplexity"}]},
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self.metrics: list[Mapping[str, float] | None] = []

    def progress(
        self, fraction: float, message: str = "", metrics: Mapping[str, float] | None = None
    ) -> None:
        self.calls.append((fraction, message))
        self.metrics.append(metrics)


@pytest.fixture(autouse=True)
def fake_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "fake-models"
    monkeypatch.setenv("FOUNDRY_FAKE_MODELS", str(root))
    return root


def model_dir() -> Path:
    return resolve_fake_source({"baseModel": "fake://tiny"})


def run_stage(
    registry: ExecutorRegistry, stage: dict[str, Any], base: Path, cycle: int = 1,
) -> tuple[StageResult, Recorder]:
    out = base / "out"
    ctx = StageContext(
        run_id="run-1", cycle=cycle, index=0, stage=stage, recipe={"stages": [stage]},
        input_dir=model_dir(), output_dir=out, work_dir=base / "work",
        base_model_dir=model_dir(),
    )
    recorder = Recorder()
    assert isinstance(recorder, StageReporter)
    result = registry.get(stage["type"]).run(ctx, recorder)
    return result, recorder


def fingerprint(result: StageResult) -> tuple[str, list[str], Any]:
    extras = [hashlib.sha256(p.read_bytes()).hexdigest() + ":" + p.name for p in result.files]
    return hash_dir(result.output_dir), extras, result.metrics


def test_the_registry_runs_every_fake_stage_type() -> None:
    registry = build_fake_registry()
    assert registry.executable_types() == frozenset(FAKE_STAGE_TYPES)
    assert registry.known_benchmarks == {"perplexity", "fake-code"}
    assert registry.device == "cpu"
    assert registry.unexecutable(["train", "distill", "merge", "distill"]) == ["distill", "merge"]
    with pytest.raises(NoExecutorError, match="distill"):
        registry.get("distill")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("train"))
    with pytest.raises(ValueError, match="fail_on"):
        build_fake_registry(fail_on="distill")


@pytest.mark.parametrize("stage_type", FAKE_STAGE_TYPES)
def test_every_fake_stage_is_a_pure_function_of_input_and_config(
    stage_type: str, tmp_path: Path
) -> None:
    registry = build_fake_registry()
    first, recorder = run_stage(registry, STAGES[stage_type], tmp_path / "a")
    again, _ = run_stage(registry, STAGES[stage_type], tmp_path / "b")
    changed, _ = run_stage(registry, CHANGED[stage_type], tmp_path / "c")
    next_cycle, _ = run_stage(registry, STAGES[stage_type], tmp_path / "d", cycle=2)

    assert first.output_dir == tmp_path / "a" / "out"
    assert sorted(p.name for p in first.output_dir.iterdir()) == ["config.json", "model.bin"]
    assert fingerprint(first) == fingerprint(again)
    assert hash_dir(changed.output_dir) != hash_dir(first.output_dir)
    assert hash_dir(next_cycle.output_dir) != hash_dir(first.output_dir)
    assert hash_dir(first.output_dir) != hash_dir(model_dir())
    for name in ("config.json", "model.bin"):
        size_in = (model_dir() / name).stat().st_size
        assert (first.output_dir / name).stat().st_size == size_in
    assert [fraction for fraction, _ in recorder.calls] == [1 / 3, 2 / 3, 1.0]


def test_the_stage_metrics(tmp_path: Path) -> None:
    registry = build_fake_registry()
    prune, _ = run_stage(registry, STAGES["prune"], tmp_path / "prune")
    assert prune.metrics == {"sparsity": 0.3}
    train, _ = run_stage(registry, STAGES["train"], tmp_path / "train")
    assert isinstance(train.metrics["finalLoss"], float)

    quant, _ = run_stage(registry, STAGES["quant"], tmp_path / "quant")
    assert [p.name for p in quant.files] == ["model-Q8_0.gguf", "model-Q4_K_M.gguf"]
    assert all(p.parent == tmp_path / "quant" / "work" and p.is_file() for p in quant.files)
    # Each tier's tensors are of its own type, as the real quant reads them back.
    assert quant.metrics["tensorTypes"] == {"Q8_0": {"Q8_0": 2}, "Q4_K_M": {"Q4_K_M": 2}}
    profiles = quant.metrics["hardwareVerified"]
    assert [p["format"] for p in profiles] == ["gguf-Q8_0", "gguf-Q4_K_M"]
    assert all(p["device"] == "cpu" and p["verified"] is True for p in profiles)
    assert all(p["tokensPerSec"] == 100.0 and p["sizeGb"] > 0 for p in profiles)

    evaluation, _ = run_stage(registry, STAGES["eval"], tmp_path / "eval")
    m = evaluation.metrics
    base, final = m["baselinePerplexity"], m["finalPerplexity"]
    assert 0 < final < base
    assert m["improvementPct"] == pytest.approx((base - final) / base * 100, abs=1e-3)
    perplexity, code = m["benchmarks"]
    assert perplexity == {"name": "perplexity", "metric": "perplexity", "score": final,
                          "baseScore": base, "delta": pytest.approx(final - base, abs=1e-3)}
    assert code["name"] == "fake-code"

    with pytest.raises(ExecutorError, match="unknown benchmark"):
        run_stage(registry, {"type": "eval", "benchmarks": [{"name": "mmlu"}]}, tmp_path / "x")


@pytest.mark.parametrize("stage_type", FAKE_STAGE_TYPES)
def test_fail_on_raises_after_the_first_progress_report(stage_type: str, tmp_path: Path) -> None:
    registry = build_fake_registry(fail_on=stage_type)
    with pytest.raises(RuntimeError, match=f"injected failure in {stage_type}"):
        run_stage(registry, STAGES[stage_type], tmp_path / "a")
    others = [t for t in FAKE_STAGE_TYPES if t != stage_type]
    result, _ = run_stage(registry, STAGES[others[0]], tmp_path / "b")
    assert result.output_dir.is_dir()


def test_fail_on_reports_once_before_failing(tmp_path: Path) -> None:
    registry = build_fake_registry(fail_on="train")
    recorder = Recorder()
    ctx = StageContext(
        run_id="r", cycle=1, index=1, stage=STAGES["train"], recipe={}, input_dir=model_dir(),
        output_dir=tmp_path / "out", work_dir=tmp_path / "work", base_model_dir=model_dir(),
    )
    with pytest.raises(RuntimeError):
        registry.get("train").run(ctx, recorder)
    assert [fraction for fraction, _ in recorder.calls] == [1 / 3]


def test_sleep_seconds_spreads_over_the_three_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("foundry.executors.fake.time.sleep", sleeps.append)
    run_stage(build_fake_registry(sleep_seconds=0.9), STAGES["lora"], tmp_path / "a")
    assert sleeps == [pytest.approx(0.3)] * 3
    sleeps.clear()
    run_stage(build_fake_registry(), STAGES["lora"], tmp_path / "b")
    assert sleeps == []


def test_the_fake_resolver_is_deterministic(
    fake_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = build_fake_registry()
    first = registry.source_resolver({"baseModel": "fake://tiny"})
    assert first == fake_models / "tiny"
    assert sorted(p.name for p in first.iterdir()) == ["config.json", "model.bin"]
    digest = hash_dir(first)
    assert registry.source_resolver({"baseModel": "fake://tiny"}) == first
    other = registry.source_resolver({"baseModel": "fake://org/other"})
    assert hash_dir(other) != digest
    # a fresh cache directory builds the same bytes
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("FOUNDRY_FAKE_MODELS", str(fresh))
    assert hash_dir(resolve_fake_source({"baseModel": "fake://tiny"})) == digest


@pytest.mark.parametrize(
    "base_model", ["./models/tiny", "hf://org/model", "fake://", "fake://../escape", ""]
)
def test_the_fake_resolver_says_where_it_looked(base_model: str) -> None:
    registry = build_fake_registry()
    with pytest.raises(SourceNotFoundError) as error:
        registry.source_resolver({"baseModel": base_model})
    assert error.value.base_model == base_model
    assert error.value.looked_in == ["fake:// models"]
    assert "fake:// models" in str(error.value)


def test_the_default_resolver_looks_for_a_local_directory(tmp_path: Path) -> None:
    registry = ExecutorRegistry()
    (tmp_path / "model").mkdir()
    assert registry.source_resolver({"baseModel": str(tmp_path / "model")}) == tmp_path / "model"
    with pytest.raises(SourceNotFoundError) as error:
        registry.source_resolver({"baseModel": str(tmp_path / "missing")})
    assert error.value.looked_in == [f"local directory {tmp_path / 'missing'}"]
    assert str(tmp_path / "missing") in str(error.value)


def test_executor_errors_survive_pickling() -> None:
    errors = [
        SourceNotFoundError("fake://x", ["fake:// models"]),
        CorpusHashMismatchError("sha256:aa", "sha256:bb"),
        NoExecutorError("distill", ["train"]),
        StageCancelledError(),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert isinstance(copy, ExecutorError)
    assert errors[1].expected == "sha256:aa" and errors[1].found == "sha256:bb"
