"""The tiny pipeline for real, through forge/run: prune -> train -> LoRA -> GGUF Q8_0 and
Q4_K_M -> eval -> hardware verification, on a model and corpus built here. No stage is
skipped or faked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import foundry.executors.real  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from foundry.domain.artifact_builder import alloy_hash
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from foundry.executors.tiny_model import build_tiny_llama
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    corpus = build_stdlib_corpus(root / "corpus")
    model = build_tiny_llama(root / "model")
    return corpus, model


def test_the_example_recipe_forges_for_real_end_to_end(inputs, tmp_path, monkeypatch):
    corpus, model = inputs
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "real")
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    from foundry.adapters.bootstrap import Foundry

    recipe: dict[str, Any] = json.loads(EXAMPLE.read_text())
    recipe["source"] = {"baseModel": str(model), "architecture": "llama"}
    recipe["calibrationCorpus"] = corpus_ref(corpus, "stdlib")
    with Foundry.open(f"sqlite:///{tmp_path / 'f.db'}") as foundry:
        created = foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe})
        assert created["success"], created
        run = foundry.execute("forge/run", {"recipeId": created["id"]})
        assert run["success"] and run["status"] == "completed", run
        assert [s["type"] for s in run["stages"]] == ["prune", "train", "lora", "quant", "eval"]
        assert all(s["status"] == "completed" for s in run["stages"])
        artifact = foundry.execute("data/read", {"collection": "forge_artifacts",
                                                 "id": run["artifactId"]})["data"]
    results = artifact["results"]
    assert results["baselinePerplexity"] > results["finalPerplexity"] > 1
    assert [b["name"] for b in results["benchmarks"]] == ["perplexity"]
    tiers = {hv["format"]: hv for hv in artifact["hardwareVerified"]}
    assert {"gguf-Q8_0", "gguf-Q4_K_M"} <= set(tiers)
    assert all(hv["verified"] and hv["tokensPerSec"] > 0 for hv in tiers.values())
    quant = next(s for s in artifact["provenance"]["stages"] if s["type"] == "quant")
    assert "Q4_K" in quant["metrics"]["tensorTypes"]["Q4_K_M"]  # hidden 256: real K-quants
    prune = artifact["provenance"]["stages"][0]
    assert prune["metrics"]["sparsity"] == pytest.approx(0.3, abs=0.01)
    doc = {k: v for k, v in artifact.items() if k != "status"}
    assert alloy_hash(doc) == artifact["alloyHash"]
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
