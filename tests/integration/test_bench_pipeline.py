"""Smoke test of benchmarks/bench_pipeline.py: its whole path (forge/run in a fresh store, the
direct calls, the comparison) on the fake executors, and its overhead arithmetic. It checks
what the benchmark computes, never how fast anything ran."""

from __future__ import annotations

import importlib
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_pipeline() -> Iterator[ModuleType]:
    """The benchmark as `python benchmarks/bench_pipeline.py` sees itself: its own folder first
    on sys.path, which is how it finds _machine.py (for this module's tests only)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("bench_pipeline")


def _run(mode: str, stage_seconds: list[float], total: float) -> dict:
    kinds = ["prune", "train", "quant"]
    return {"mode": mode, "total_s": total, "cpu_s": total, "events": 10, "stages": [
        {"cycle": 1, "index": i, "type": kinds[i], "executor_s": s,
         "span_s": s + 0.1, "output_hash": f"h{i}"}
        for i, s in enumerate(stage_seconds)]}


def test_summarize_takes_medians_and_the_overhead_against_direct(bench_pipeline):
    foundry = [_run("foundry", [1.0, 2.0, 3.0], 6.5), _run("foundry", [1.2, 2.2, 3.2], 7.1)]
    direct = [_run("direct", [1.0, 2.0, 3.0], 6.0), _run("direct", [1.0, 2.0, 3.0], 6.0)]
    for d in direct:
        for s in d["stages"]:
            del s["span_s"]

    s = bench_pipeline.summarize(foundry, direct)

    assert s["foundry_total_s"] == pytest.approx(6.8)
    assert s["direct_total_s"] == pytest.approx(6.0)
    assert s["overhead_pct"] == pytest.approx(13.33, abs=0.01)
    assert s["overhead_pct_per_repeat"] == pytest.approx([8.33, 18.33], abs=0.01)
    assert s["target_met"] is False
    first = s["stages"][0]
    assert first["foundry_executor_s"] == pytest.approx(1.1)
    assert first["foundry_span_s"] == pytest.approx(1.2)
    assert first["overhead_s"] == pytest.approx(0.2)
    assert s["rest_of_forge_run_s"] == pytest.approx(6.8 - (1.2 + 2.2 + 3.2))
    assert s["same_outputs"] is True
    # own time: the total less the executors' recorded seconds (no reporter time given here)
    assert s["foundry_own_s"] == pytest.approx(statistics.median([6.5 - 6.0, 7.1 - 6.6]))
    assert s["foundry_own_pct"] == pytest.approx(s["foundry_own_s"] / 6.0 * 100, abs=0.01)


def test_summarize_refuses_runs_of_different_stages(bench_pipeline):
    foundry = [_run("foundry", [1.0, 2.0, 3.0], 6.5)]
    direct = [_run("direct", [1.0, 2.0], 3.0)]
    with pytest.raises(ValueError, match="ran"):
        bench_pipeline.summarize(foundry, direct)


def test_the_benchmark_runs_end_to_end_on_the_fake_executors(bench_pipeline, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.setenv("FOUNDRY_FAKE_MODELS", str(tmp_path / "fake-models"))

    assert bench_pipeline.main(["--executors", "fake", "--repeats", "2", "--json",
                                "--tmpdir", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    doc = json.loads(out.strip().splitlines()[-1])
    overhead = doc["overhead"]
    assert [s["type"] for s in overhead["stages"]] == ["prune", "train", "lora", "quant", "eval"]
    assert overhead["same_outputs"] is True  # both paths really did the same work
    assert len(overhead["foundry_runs_s"]) == len(overhead["direct_runs_s"]) == 2
    assert {"overhead_pct", "target_met", "rest_of_forge_run_s", "foundry_own_pct",
            "cpu_overhead_pct"} <= overhead.keys()
    assert doc["gguf"] is None  # the fake quant stage writes no GGUF
    assert doc["machine"]["loadavg_at_end"]
    assert list(tmp_path.glob("bench-pipeline-*")) == []  # its temp dir is cleaned up
