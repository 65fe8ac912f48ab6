"""The evaluation ledger: every field a score's reader needs, and a key that changes with
what decides the score and not with what is being compared (the model) or where it ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from foundry.executors.real.eval_ledger import (
    HARNESS_VERSIONS,
    ledger_key,
    make_ledger,
    model_identity,
    sha256_text,
)

FIELDS = {"harness", "harnessVersion", "dataset", "datasetHash", "problems", "taskIds",
          "taskIdsHash", "promptTemplateHash", "sampling", "seed", "modelHash", "modelFormat",
          "device", "wallSeconds", "samplesHash", "ledgerKey"}


def ledger(**change: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "harness": "humaneval", "dataset": {"name": "openai_humaneval", "sha256": "sha256:d"},
        "task_ids": ["HumanEval/0", "HumanEval/1"], "prompt_template": "{prompt}",
        "sampling": {"greedy": True, "maxNewTokens": 256}, "seed": 7,
        "model": {"hash": "sha256:m", "format": "safetensors"}, "device": "cpu",
        "wall_seconds": 1.23456, "samples_hash": "sha256:s"}
    args.update(change)
    return make_ledger(**args)


def test_a_ledger_records_how_the_score_was_made() -> None:
    led = ledger(base={"model": {"hash": "sha256:b", "format": "safetensors"},
                       "wallSeconds": 2.0, "samplesHash": "sha256:bs"})
    assert set(led) == FIELDS | {"baseModelHash", "baseModelFormat", "baseWallSeconds",
                                 "baseSamplesHash"}
    assert led["harnessVersion"] == HARNESS_VERSIONS["humaneval"]
    assert (led["problems"], led["datasetHash"], led["wallSeconds"]) == (2, "sha256:d", 1.235)
    assert led["promptTemplateHash"] == sha256_text("{prompt}")
    assert led["ledgerKey"] == ledger_key(led)


@pytest.mark.parametrize("change", [
    {"seed": 8}, {"sampling": {"greedy": True, "maxNewTokens": 128}},
    {"dataset": {"sha256": "sha256:other"}}, {"task_ids": ["HumanEval/0"]},
    {"task_ids": ["HumanEval/0", "HumanEval/2"]}, {"prompt_template": "# {prompt}"},
    {"harness": "foundry-code-mini"},
])
def test_the_key_changes_with_anything_that_decides_the_score(change: dict[str, Any]) -> None:
    assert ledger(**change)["ledgerKey"] != ledger()["ledgerKey"]


@pytest.mark.parametrize("change", [
    {"model": {"hash": "sha256:other", "format": "gguf"}}, {"device": "cuda"},
    {"wall_seconds": 99.0}, {"samples_hash": "sha256:x"},
])
def test_the_key_ignores_the_model_under_test_and_where_it_ran(change: dict[str, Any]) -> None:
    assert ledger(**change)["ledgerKey"] == ledger()["ledgerKey"]


def test_the_model_identity_hashes_every_weights_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = model_identity(tmp_path)
    assert first["format"] == "safetensors" and first["hash"].startswith("sha256:")
    (tmp_path / "config.json").write_text('{"a": 1}')  # not weights: same identity
    assert model_identity(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert model_identity(tmp_path)["hash"] != first["hash"]
    (tmp_path / "m.gguf").write_bytes(b"g")
    assert model_identity(tmp_path)["format"] == "gguf+safetensors"
