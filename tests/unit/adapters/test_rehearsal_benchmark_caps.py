"""A rehearsal caps HumanEval like it caps training steps: the real benchmark still runs
(data set, generation, sandboxed judging) on two problems, and every cap is recorded."""

from __future__ import annotations

from typing import Any

from foundry.adapters.runs.rehearsal import cap_benchmarks


def test_humaneval_is_capped_and_each_cap_recorded() -> None:
    caps: list[dict[str, Any]] = []
    out = cap_benchmarks(["perplexity", "humaneval"], "evaluationBenchmarks", caps)
    assert out == ["perplexity", {"name": "humaneval", "limit": 2, "maxNewTokens": 32}]
    assert caps == [
        {"field": "evaluationBenchmarks[humaneval].limit", "type": "humaneval", "from": None,
         "to": 2},
        {"field": "evaluationBenchmarks[humaneval].maxNewTokens", "type": "humaneval", "from": None,
         "to": 32}]


def test_values_under_the_cap_are_kept_and_not_reported() -> None:
    caps: list[dict[str, Any]] = []
    entry = {"name": "humaneval", "limit": 1, "maxNewTokens": 400, "subset": "0-9"}
    out = cap_benchmarks([entry], "stages[2].benchmarks", caps)
    assert out == [{"name": "humaneval", "limit": 1, "maxNewTokens": 32, "subset": "0-9"}]
    assert [c["field"] for c in caps] == ["stages[2].benchmarks[humaneval].maxNewTokens"]
    assert entry["maxNewTokens"] == 400  # the recipe's own entry is not touched


def test_data_file_benchmarks_run_when_given_a_file_and_are_stood_in_for_without_one() -> None:
    from foundry.adapters.runs.rehearsal import _runnable_benchmarks
    from foundry.executors.registry import ExecutorRegistry

    registry = ExecutorRegistry(known_benchmarks={"perplexity", "humaneval"},
                                data_file_benchmarks={"mmlu", "gsm8k"})
    stand_ins: list[dict[str, Any]] = []
    entries = [{"name": "mmlu", "dataFile": "/data/mmlu.jsonl"}, {"name": "gsm8k", "nShot": 8},
               "humaneval", {"name": "hellaswag"}]
    kept = _runnable_benchmarks(entries, registry, "evaluationBenchmarks", stand_ins)
    assert kept == [{"name": "mmlu", "dataFile": "/data/mmlu.jsonl"}, "humaneval"]
    assert [(s["replaced"], s["why"].split(";")[0]) for s in stand_ins] == [
        (["hellaswag"], "not known to this worker's eval executor"),
        (["gsm8k"], "their data sets are not installed here and the entry names no dataFile")]
    caps: list[dict[str, Any]] = []
    assert cap_benchmarks(kept[:1], "evaluationBenchmarks", caps) == [
        {"name": "mmlu", "dataFile": "/data/mmlu.jsonl", "limit": 4}]
    assert [c["field"] for c in caps] == ["evaluationBenchmarks[mmlu].limit"]
