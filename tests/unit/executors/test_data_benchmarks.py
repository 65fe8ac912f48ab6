"""mmlu, mmlu-pro and gsm8k on a local data file: reading, choosing, prompting, answer parsing.
The scoring with a real model is in tests/integration/test_real_quant_eval.py."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from foundry.executors.errors import ExecutorError
from foundry.executors.real import gsm8k, mmlu
from foundry.executors.real.data_benchmarks import (
    DataSettings,
    plan_data_benchmark,
    read_data_file,
)
from foundry.executors.real.eval_entries import plan_of

FIXTURES = Path(__file__).parents[2] / "fixtures" / "benchmarks"
MMLU, GSM = FIXTURES / "mmlu-mini.jsonl", FIXTURES / "gsm8k-mini.jsonl"


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_data_file_is_read_as_json_lines_gzip_or_an_array_and_hashed(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in MMLU.read_text().splitlines()]
    plain = read_data_file(MMLU, "mmlu")
    assert plain.rows == rows
    assert plain.sha256 == "sha256:" + hashlib.sha256(MMLU.read_bytes()).hexdigest()
    packed = tmp_path / "m.jsonl.gz"
    packed.write_bytes(gzip.compress(MMLU.read_bytes()))
    assert read_data_file(packed, "mmlu").rows == rows
    array = tmp_path / "m.json"
    array.write_text(json.dumps(rows))
    assert read_data_file(array, "mmlu").rows == rows
    assert plain.record("mmlu") == {"name": "mmlu", "source": "local file",
                                    "file": "mmlu-mini.jsonl", "sha256": plain.sha256,
                                    "size": 8}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", '{"question": "q"}\n{oops\n', r"bad.jsonl, line 2: not JSON"),
    ("list.jsonl", '[1, 2]\n', r"row 1: an object is required, got list"),
    ("empty.jsonl", "\n\n", "no rows"),
    ("obj.json", '{"question": "q"}', "must hold an array of objects"),
    ("bin.jsonl.gz", "not gzip", "not UTF-8 text \\(or not gzip\\)"),
])
def test_an_unreadable_data_file_is_refused_naming_the_file_and_line(
        tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ExecutorError, match=message):
        read_data_file(path, "mmlu")


def test_a_missing_data_file_or_no_data_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match=r"'mmlu' cannot run on this machine without a "
                                            r"data file.*dataFile"):
        DataSettings.from_def("mmlu", {"name": "mmlu"})
    missing = tmp_path / "gone.jsonl"
    with pytest.raises(ExecutorError, match=f"gsm8k: its data file {missing} does not exist"):
        plan_of({"benchmarks": [{"name": "gsm8k", "dataFile": str(missing)}]},
                ["perplexity", "gsm8k"])


@pytest.mark.parametrize(("entry", "message"), [
    ({"gguf": "Q8_0"}, "gguf apply to humaneval only"),
    ({"samples": 4}, "samples apply to humaneval only"),
    ({"nShot": -1}, "nShot must be an integer >= 0"),
    ({"limit": 0}, "limit must be an integer >= 1"),
    ({"maxNewTokens": True}, "maxNewTokens must be an integer >= 1"),
    ({"shotsFile": 3}, "shotsFile must be a path"),
])
def test_entry_fields_are_checked_naming_the_field(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ExecutorError, match=message):
        DataSettings.from_def("gsm8k", {"name": "gsm8k", "dataFile": str(GSM), **entry})


def test_mmlu_subset_is_subjects_and_limit_the_first_n() -> None:
    plan = plan_data_benchmark("mmlu", {"dataFile": str(MMLU), "subset": "python_basics",
                                        "limit": 3}, mmlu.parse_row)
    assert [p.task_id for p in plan.problems] == ["mini-4", "mini-5", "mini-6"]
    assert {p.group for p in plan.problems} == {"python_basics"}
    with pytest.raises(ExecutorError, match=r"subjects the data file does not have: "
                                            r"\['astronomy'\].*arithmetic"):
        plan_data_benchmark("mmlu", {"dataFile": str(MMLU), "subset": "astronomy"},
                            mmlu.parse_row)


def test_shots_come_from_the_data_file_per_subject_and_are_not_scored(tmp_path: Path) -> None:
    plan = plan_data_benchmark("mmlu", {"dataFile": str(MMLU), "nShot": 1}, mmlu.parse_row)
    assert plan.shot_ids == ["mini-0", "mini-4"]  # the first of each subject
    assert [p.task_id for p in plan.problems] == ["mini-1", "mini-2", "mini-3", "mini-5",
                                                   "mini-6", "mini-7"]
    assert "shotsFile" not in plan.dataset_record()
    with pytest.raises(ExecutorError, match="no problem is left to score"):
        plan_data_benchmark("mmlu", {"dataFile": str(MMLU), "nShot": 4}, mmlu.parse_row)
    shots = _write(tmp_path / "dev.jsonl", [json.loads(MMLU.read_text().splitlines()[0])])
    with pytest.raises(ExecutorError, match=r"nShot 2 needs that many examples per subject; "
                                            r"too few for \['arithmetic', 'python_basics'\]"):
        plan_data_benchmark("mmlu", {"dataFile": str(MMLU), "nShot": 2,
                                     "shotsFile": str(shots)}, mmlu.parse_row)


def test_shots_from_a_shots_file_leave_every_problem_scored_and_are_hashed() -> None:
    plan = plan_data_benchmark("gsm8k", {"dataFile": str(GSM), "shotsFile": str(GSM),
                                         "nShot": 2, "subset": "1-3"}, gsm8k.parse_row)
    assert [p.task_id for p in plan.problems] == ["gsm8k/1", "gsm8k/2", "gsm8k/3"]
    assert plan.shot_ids == ["gsm8k/0", "gsm8k/1"]
    record = plan.dataset_record()
    assert record["shotsFile"] == "gsm8k-mini.jsonl"
    assert record["shotsSha256"] == "sha256:" + hashlib.sha256(GSM.read_bytes()).hexdigest()
    with pytest.raises(ExecutorError, match=r"gsm8k subset: 'x-1' is not problem numbers"):
        plan_data_benchmark("gsm8k", {"dataFile": str(GSM), "subset": "x-1"},
                            gsm8k.parse_row)
    with pytest.raises(ExecutorError, match="no problem is left to score"):
        plan_data_benchmark("gsm8k", {"dataFile": str(GSM), "subset": "40-50"},
                            gsm8k.parse_row)


@pytest.mark.parametrize(("row", "letter"), [
    ({"answer": 2}, "C"), ({"answer": "d"}, "D"), ({"answer_index": 0}, "A"),
])
def test_mmlu_answers_are_letters_or_indices(row: dict[str, Any], letter: str) -> None:
    base = {"question": "q?", "choices": ["w", "x", "y", "z"]}
    assert mmlu.parse_row("mmlu", 0, {**base, **row}, MMLU).answer == letter


def test_mmlu_pro_rows_with_ten_options_and_a_category_parse() -> None:
    row = {"question_id": 70, "question": "Pick J.", "options": list("abcdefghij"),
           "answer": "J", "answer_index": 9, "category": "law"}
    p = mmlu.parse_row("mmlu-pro", 0, row, MMLU)
    assert (p.task_id, p.group, p.answer, len(p.choices)) == ("70", "law", "J", 10)


@pytest.mark.parametrize(("row", "message"), [
    ({"choices": ["a", "b"], "answer": 0}, "`question` must be a non-empty string"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "2 to 16 strings"),
    ({"question": "q", "choices": ["a", "b"], "answer": 5}, "one of the choice letters AB"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, "one of the choice letters"),
])
def test_a_bad_mmlu_row_is_refused_naming_its_row_and_field(row: dict[str, Any],
                                                          message: str) -> None:
    with pytest.raises(ExecutorError, match=f"row 3: .*{message}"):
        mmlu.parse_row("mmlu", 2, row, MMLU)


def test_the_mmlu_prompt_is_lm_evaluation_harness_s() -> None:
    plan = plan_data_benchmark("mmlu", {"dataFile": str(MMLU), "nShot": 1}, mmlu.parse_row)
    problem = plan.problems[0]
    assert mmlu.prompt_of(problem, plan.shots[problem.group]) == (
        "The following are multiple choice questions (with answers) about arithmetic.\n\n"
        "What is 7 + 5?\nA. 10\nB. 11\nC. 12\nD. 13\nAnswer: C\n\n"
        "What is 9 times 3?\nA. 27\nB. 24\nC. 21\nD. 30\nAnswer:")


def test_gsm8k_reference_and_model_answers_are_read_as_numbers() -> None:
    problem = gsm8k.parse_row("gsm8k", 4, json.loads(GSM.read_text().splitlines()[4]), GSM)
    assert problem.answer == "300"
    assert gsm8k.extract(" 1,200 / 4 = 300.\n#### 300") == "300"
    assert gsm8k.extract(" So she has $12.00 left.") == "12"
    assert gsm8k.extract(" 3 + 4 = 7 apples") == "7"
    assert gsm8k.extract(" It is -2.50 and then 1000.") == "1000"
    assert gsm8k.extract(" no number here") is None
    assert gsm8k.normalize("1,000.") == "1000" and gsm8k.normalize("0.00") == "0"
    assert gsm8k.cut(" 7.\n\nQuestion: next") == (" 7.", True)
    assert gsm8k.cut(" 7 and") == (" 7 and", False)
    with pytest.raises(ExecutorError, match=r"row 1: `answer` has no final '#### <number>'"):
        gsm8k.parse_row("gsm8k", 0, {"question": "q", "answer": "seven"}, GSM)


def test_the_gsm8k_prompt_shows_each_example_s_worked_answer() -> None:
    plan = plan_data_benchmark("gsm8k", {"dataFile": str(GSM), "nShot": 1, "limit": 1},
                               gsm8k.parse_row)
    assert gsm8k.prompt_of(plan.problems[0], plan.shots[""]) == (
        "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\n"
        "Answer: Tom starts with 3 apples.\nHe buys 4 more, so 3 + 4 = 7.\n#### 7\n\n"
        "Question: A box holds 6 pencils. How many pencils are in 5 boxes?\nAnswer:")


def test_plan_of_reads_every_data_file_benchmark_before_a_model_is_loaded() -> None:
    stage = {"benchmarks": [{"name": "mmlu", "dataFile": str(MMLU), "limit": 2},
                            {"name": "gsm8k", "dataFile": str(GSM)}]}
    plan = plan_of(stage, ["perplexity", "mmlu", "gsm8k"])
    assert [(d.name, len(d.problems)) for d in plan.data] == [("mmlu", 2), ("gsm8k", 5)]
