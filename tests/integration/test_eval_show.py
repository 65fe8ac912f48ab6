"""eval/show and `foundry eval show`: the ledger of a stored artifact's scores, by artifact or
run id, through the Python API and the CLI; every bad input an envelope. Fake executors (the
real ledger is checked end to end in tests/e2e/test_smollm2_humaneval.py)."""

from __future__ import annotations

import io
import uuid
from contextlib import redirect_stdout
from typing import Any

import pytest

from foundry.adapters.cli.eval import COLUMNS, _row
from tests.conftest import ok
from tests.unit.adapters.test_cards_ledger import LEDGER


def forged(foundry: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    created = ok(foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe}))
    run = ok(foundry.execute("forge/run", {"recipeId": created["id"]}))
    assert run["status"] == "completed", run
    return run


def test_eval_show_lists_every_score_of_an_artifact_by_either_id(
        forge_env: Any, foundry: Any, recipe: dict[str, Any]) -> None:
    run = forged(foundry, recipe)
    by_artifact = ok(foundry.execute("eval/show", {"id": run["artifactId"]}))
    by_run = ok(foundry.execute("eval/show", {"id": run["runId"]}))
    assert by_artifact["benchmarks"] == by_run["benchmarks"]
    assert by_artifact["runId"] == run["runId"]
    assert by_artifact["artifactId"] == run["artifactId"]
    names = [b["name"] for b in by_artifact["benchmarks"]]
    assert "perplexity" in names
    # The fake executors record no ledger: shown as such, never invented.
    assert all(b["ledger"] == {} for b in by_artifact["benchmarks"])


@pytest.mark.parametrize("params", [{"id": "not-a-uuid"}, {"id": str(uuid.uuid4())}, {},
                                    {"id": 5}, {"id": "x" * 65}, {"id": "a", "path": "/etc"}])
def test_eval_show_answers_bad_input_with_an_envelope(foundry: Any, params: Any) -> None:
    result = foundry.execute("eval/show", params)
    assert result["success"] is False and result["error"], result


def test_the_cli_prints_the_ledger_as_a_table_and_as_json(
        forge_env: Any, foundry: Any, recipe: dict[str, Any]) -> None:
    from foundry.adapters.cli.main import CliFoundry, build_parser

    run = forged(foundry, recipe)
    parser = build_parser()
    for argv, expect in ((["eval", "show", run["runId"]], "not recorded"),
                         (["eval", "show", run["runId"], "--json"], '"benchmarks"'),
                         (["eval", "show", "nope"], '"success": false')):
        args = parser.parse_args(argv)
        out = io.StringIO()
        with redirect_stdout(out):
            code = args.run(CliFoundry(foundry, "tester"), args)
        assert expect in out.getvalue(), out.getvalue()
        assert code == (1 if argv[-1] == "nope" else 0)


def test_a_ledger_row_shows_harness_data_sampling_model_and_samples() -> None:
    row = _row({"name": "humaneval", "subset": "first 5", "metric": "pass@1", "score": 0.4,
                "baseScore": 0.2, "baseComparable": False, "ledger": LEDGER})
    assert len(row) == len(COLUMNS)
    cells = dict(zip(COLUMNS, row, strict=True))
    assert cells["Benchmark"] == "humaneval (first 5)"
    assert cells["Base"] == "0.2 (not comparable)"
    assert cells["Harness"] == "foundry-humaneval/1"
    assert cells["Data"] == "sha256:dddddddddddd" and cells["Problems"] == "5"
    assert cells["Sampling"] == "greedy, 1 sample(s), 256 new tokens"
    assert cells["Model"] == "safetensors sha256:aaaaaaaaaaaa"
    assert cells["Samples"] == "sha256:555555555555" and cells["Seconds"] == "12.5"


class _Answers:
    """Stands in for the Foundry behind the CLI: answers eval/show with a recorded envelope."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope

    def execute(self, command: str, _params: Any) -> dict[str, Any]:
        assert command == "eval/show"
        return self.envelope


def test_the_table_keeps_each_ledger_field_on_one_line_and_lists_what_is_not_compared() -> None:
    from foundry.adapters.cli.main import build_parser

    envelope = {"success": True, "artifactId": "a-1", "runId": "r-1", "notComparable": [
        "humaneval: the prior baseline 0.3 was measured by lm-eval"], "benchmarks": [
        {"name": "humaneval", "subset": "0-4", "metric": "pass@1", "score": 0.4,
         "baseScore": 0.2, "baseComparable": True, "ledger": LEDGER}]}
    args = build_parser().parse_args(["eval", "show", "a-1"])
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.run(_Answers(envelope), args) == 0
    line = next(x for x in out.getvalue().splitlines() if "humaneval (0-4)" in x)
    for cell in ("foundry-humaneval/1", "sha256:dddddddddddd", "greedy, 1 sample(s), 256 new "
                 "tokens", "safetensors sha256:aaaaaaaaaaaa", "sha256:555555555555", "12.5"):
        assert cell in line, line
    assert "not compared: humaneval: the prior baseline 0.3 was measured by lm-eval" in \
        out.getvalue()
