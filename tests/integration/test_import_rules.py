"""alloy/import obeys the input rules data/* obeys (#17 item 8), on SQLite and PostgreSQL.

A value no store can hold (NUL, a lone surrogate, NaN/Infinity, an oversized string) used to be
accepted by import although data/* refused it; on PostgreSQL every later recipe read and
`projections rebuild` then failed. Each case is written as raw JSON text, the way a hostile
or broken file arrives, and must be refused naming the field, with nothing written on either
event log and the views still readable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, count_events, count_run_events, ok

EXECUTED = ROOT / "tests" / "fixtures" / "alloys" / "executed-with-results.alloy.json"


@pytest.fixture
def foundry(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    monkeypatch.setenv("FOUNDRY_EXECUTORS", "fake")
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with Foundry.open(store_url) as f:
        yield f


def _text() -> str:
    return EXECUTED.read_text(encoding="utf-8")


def _replace(old: str, new: str) -> Callable[[], str]:
    def make() -> str:
        text = _text()
        assert old in text, old
        return text.replace(old, new, 1)
    return make


# (how the file is made, the field the refusal must name, a word of its rule)
CASES: dict[str, tuple[Callable[[], str], str, str]] = {
    "NUL in the recipe name": (
        _replace('"name": "tiny-code-balanced"', '"name": "tiny\\u0000code"'), "file.name", "NUL"),
    "NUL in a run result": (
        _replace('"finalParams": "0.6B"', '"finalParams": "0.6\\u0000B"'),
        "file.results.finalParams", "NUL"),
    "NUL in a key": (
        _replace('"finalParams": "0.6B"', '"final\\u0000": "0.6B"'), "file.results", "NUL"),
    "lone surrogate": (
        _replace('"author": "foundry-tests"', '"author": "a\\ud800b"'), "file.author", "surrogate"),
    "NaN": (
        _replace('"finalPerplexity": 6.4', '"finalPerplexity": NaN'),
        "file.results.finalPerplexity", "finite"),
    "Infinity": (
        _replace('"baselinePerplexity": 7.9', '"baselinePerplexity": -Infinity'),
        "file.results.baselinePerplexity", "finite"),
    "integer beyond 64 bits": (
        _replace('"steps": 300', '"steps": 123456789012345678901234567890'),
        "file.stages.1.steps", "2^63"),
    "oversized string": (
        _replace('"description": "An executed alloy',
                 '"description": "' + "x" * 1_100_000 + ' An executed alloy'),
        "file", "limit"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_refuses_what_data_refuses_and_writes_nothing(foundry: Any, tmp_path: Path,
                                                            case: str) -> None:
    make, field, word = CASES[case]
    path = tmp_path / "bad.alloy.json"
    path.write_text(make(), encoding="utf-8")
    before = (count_events(foundry), count_run_events(foundry))

    result = foundry.execute("alloy/import", {"paths": [str(path)]})

    assert result["success"] is False and result["errorCode"] == "invalid_input", result
    [entry] = result["imported"]
    assert entry["status"] == "refused", entry
    assert field in entry["error"] and word in entry["error"], entry["error"]
    assert (count_events(foundry), count_run_events(foundry)) == before == (0, 0)
    # The views still read (the PostgreSQL failure mode was every later read breaking).
    assert ok(foundry.execute("data/list", {"collection": "forge_recipes"}))["count"] == 0
    assert ok(foundry.execute("forge/list-runs", {}))["count"] == 0


def test_data_create_refuses_the_same_values_and_writes_nothing(foundry: Any) -> None:
    """The other half of the bug report: on PostgreSQL a refused `recipe create` still saved
    its event. A NUL in the data is refused before anything is written."""
    recipe = json.loads(_text())
    recipe = {k: recipe[k] for k in ("name", "version", "source", "stages")}
    recipe["name"] = "bad\x00name"
    result = foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe})
    assert result["success"] is False and result["errorCode"] == "invalid_input", result
    assert "data.name" in result["error"] and "NUL" in result["error"], result
    assert count_events(foundry) == 0
    assert ok(foundry.execute("data/list", {"collection": "forge_recipes"}))["count"] == 0
