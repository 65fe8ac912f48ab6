"""Issue #16 item 7: parameter counts from the files a stage wrote (real tiny models saved by
transformers), and through forge/run into the artifact's forgedParamsB / activeParamsB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.runs.model_params import count_params, is_routed_expert


def tiny_qwen3_moe(out: Path) -> Any:
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                            moe_intermediate_size=16, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, num_experts=8,
                            num_experts_per_tok=2, head_dim=8, tie_word_embeddings=False)
    model = Qwen3MoeForCausalLM(config)
    model.save_pretrained(out)
    return model


def test_a_moe_model_counts_every_parameter_and_top_k_of_its_experts(tmp_path):
    model = tiny_qwen3_moe(tmp_path / "moe")
    named = dict(model.state_dict())
    total = sum(t.numel() for t in named.values())
    routed = sum(t.numel() for name, t in named.items() if ".experts." in name)
    assert routed > 0 and all(not is_routed_expert(n) for n in named if "experts" not in n)
    counted = count_params(tmp_path / "moe")
    assert counted == {"params": total, "activeParams": total - routed + routed * 2 // 8}


def test_a_dense_model_has_no_active_count_and_no_weights_no_count(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, tie_word_embeddings=False))
    model.save_pretrained(tmp_path / "dense")
    total = sum(t.numel() for t in model.state_dict().values())
    assert count_params(tmp_path / "dense") == {"params": total}
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "config.json").write_text(json.dumps({"num_experts": 8}))
    assert count_params(tmp_path / "none") is None


@pytest.mark.slow
def test_forge_run_puts_both_counts_in_the_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "real")
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    from foundry.adapters.bootstrap import Foundry

    model = tiny_qwen3_moe(tmp_path / "moe")
    total = sum(p.numel() for p in model.state_dict().values())
    recipe = {"name": "count-params", "version": "0.1.0",
              "source": {"baseModel": str(tmp_path / "moe"), "architecture": "qwen3_moe",
                         "isMoE": True, "totalExperts": 8},
              "stages": [{"type": "source-config", "contextLength": 256}]}
    with Foundry.open(f"sqlite:///{tmp_path / 'f.db'}") as foundry:
        created = foundry.execute("data/create", {"collection": "forge_recipes",
                                                  "data": recipe})
        assert created["success"], created
        run = foundry.execute("forge/run", {"recipeId": created["id"]})
        assert run["success"] and run["status"] == "completed", run
        doc = foundry.execute("data/read", {"collection": "forge_artifacts",
                                            "id": run["artifactId"]})["data"]
    assert doc["forgedParamsB"] == round(total / 1e9, 6)
    assert 0 < doc["activeParamsB"] < doc["forgedParamsB"]
