"""Each family's module map against a real, randomly initialised scale model of that family.

The model is built by transformers from the family's own config class (through
`foundry.executors.scale_models`), so a wrong module name, a wrong row layout or a wrong layer
kind in an `Architecture` fails here rather than in a forge run.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from foundry.executors.architectures import (
    FAMILIES,
    UnsupportedArchitectureError,
    for_config,
    lookup,
    supported,
)
from foundry.executors.scale_models import (
    Widths,
    base_config_for,
    default_config,
    scale_config,
    scale_config_dict,
)

FAMILY_NAMES = ["gemma3", "llama", "qwen3", "qwen3_5", "qwen3_5_moe", "qwen3_moe"]


def _model(family: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    config = scale_config(default_config(family), vocab_size=256)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32), config


def _get(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def test_the_supported_families_are_the_six_named() -> None:
    assert supported() == FAMILY_NAMES
    for name in ("Qwen3_5ForCausalLM", "qwen3_5_text", "QWEN3_5", " llama "):
        assert lookup(name) is not None
    assert lookup("qwen3_vl") is None and lookup("mistral") is None


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_module_map_matches_a_real_model(family: str) -> None:
    arch = FAMILIES[family]
    model, config = _model(family)
    assert type(model).__name__ == arch.causal_lm_class
    assert for_config(model.config) is arch
    layers = model.model.layers
    kinds = arch.layer_kinds_of(config)
    assert len(kinds) == len(layers)
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    seen_kinds = set()
    for layer, kind in zip(layers, kinds, strict=True):
        seen_kinds.add(kind)
        other = {"attention": arch.linear_attention, "linear_attention": arch.attention}[kind]
        if other is not None:  # a layer holds one token mixer, the one its kind says
            assert not hasattr(layer, other.module)
        if kind == "attention":
            a = arch.attention
            attn = getattr(layer, a.module)
            q_rows = heads * head_dim * (2 if a.gated_query else 1)
            assert tuple(_get(attn, a.q_proj).weight.shape) == (q_rows, config.hidden_size)
            for name in (a.k_proj, a.v_proj):
                assert tuple(_get(attn, name).weight.shape) == (kv * head_dim, config.hidden_size)
            assert tuple(_get(attn, a.o_proj).weight.shape) == (config.hidden_size,
                                                                 heads * head_dim)
            for norm in a.qk_norms:
                assert tuple(_get(attn, norm).weight.shape) == (head_dim,)
            # no per-head norm the map does not know of (it would need cutting)
            norms = {n for n, _ in attn.named_children() if "norm" in n}
            assert norms == set(a.qk_norms)
        else:
            la = arch.linear_attention
            assert la is not None
            lin = getattr(layer, la.module)
            nk, nv = config.linear_num_key_heads, config.linear_num_value_heads
            dk, dv = config.linear_key_head_dim, config.linear_value_head_dim
            qkv = 2 * nk * dk + nv * dv
            assert tuple(_get(lin, la.in_proj_qkv).weight.shape) == (qkv, config.hidden_size)
            assert _get(lin, la.conv1d).weight.shape[0] == qkv
            assert tuple(_get(lin, la.in_proj_z).weight.shape) == (nv * dv, config.hidden_size)
            for name in (la.in_proj_a, la.in_proj_b):
                assert tuple(_get(lin, name).weight.shape) == (nv, config.hidden_size)
            for name in la.per_value_head:
                assert tuple(_get(lin, name).shape) == (nv,)
            assert tuple(_get(lin, la.out_proj).weight.shape) == (config.hidden_size, nv * dv)
            assert tuple(_get(lin, la.norm).weight.shape) == (dv,)
        mlp_module = layer.mlp
        if arch.moe is not None and hasattr(mlp_module, arch.moe.experts):
            m = arch.moe
            experts = _get(mlp_module, m.experts)
            e, width = getattr(config, m.experts_key), getattr(config, m.intermediate_key)
            assert getattr(config, m.top_k_key) >= 1
            assert tuple(_get(experts, m.gate_up_proj).shape) == (e, 2 * width,
                                                                  config.hidden_size)
            assert tuple(_get(experts, m.down_proj).shape) == (e, config.hidden_size, width)
            assert tuple(_get(mlp_module, m.router).weight.shape) == (e, config.hidden_size)
            assert (m.shared_expert is None) == (not hasattr(mlp_module, "shared_expert"))
            if m.shared_expert_gate:
                assert tuple(_get(mlp_module, m.shared_expert_gate).weight.shape) == (
                    1, config.hidden_size)
        else:
            assert arch.mlp is not None
            width = getattr(config, arch.mlp.intermediate_key)
            for name in (arch.mlp.gate_proj, arch.mlp.up_proj):
                assert tuple(_get(mlp_module, name).weight.shape) == (width, config.hidden_size)
            assert tuple(_get(mlp_module, arch.mlp.down_proj).weight.shape) == (
                config.hidden_size, width)
        # every LoRA target path for this layer is a Linear (a Parameter for fused experts)
        sparse = arch.is_sparse(layer)
        linear_maps = [arch.lora_targets[kind],
                       arch.lora_moe_targets if sparse else arch.lora_mlp_targets]
        for target, paths in [t for m in linear_maps for t in m.items()]:
            for path in paths:
                assert isinstance(_get(layer, path), torch.nn.Linear), (family, target, path)
        for target, paths in (arch.lora_parameter_targets if sparse else {}).items():
            for path in paths:
                assert isinstance(_get(layer, path), torch.nn.Parameter), (family, target, path)
        recipe_names = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"}
        reached = {*arch.lora_targets[kind], *(arch.lora_moe_targets if sparse else
                                                arch.lora_mlp_targets),
                   *(arch.lora_parameter_targets if sparse else {})}
        assert recipe_names <= reached, (family, kind, recipe_names - reached)
    assert seen_kinds == set(arch.layer_kinds.values())


def test_gated_query_is_per_head_query_then_gate() -> None:
    """Qwen3.5's q_proj rows for head h are [query (head_dim), gate (head_dim)], as the map's
    `gated_query` says. With every gate row zeroed (sigmoid(0) = 0.5) and head 0's query rows
    zeroed (uniform causal attention), head 0's input to o_proj must be exactly half the running
    mean of KV group 0's values; any other row layout breaks the equality."""
    model, config = _model("qwen3_5")
    kinds = FAMILIES["qwen3_5"].layer_kinds_of(config)
    attn = model.model.layers[kinds.index("attention")].self_attn
    heads, hd = config.num_attention_heads, config.head_dim
    seen: dict[str, Any] = {}
    attn.q_proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("x", a[0]))
    attn.o_proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("o", a[0]))
    ids = torch.arange(1, 9).unsqueeze(0)
    with torch.no_grad():
        rows = attn.q_proj.weight.view(heads, 2, hd, config.hidden_size)
        rows[:, 1] = 0
        rows[0, 0] = 0
        model(input_ids=ids)
        values = attn.v_proj(seen["x"])[..., :hd]
        steps = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32).view(1, -1, 1)
        expected = 0.5 * values.cumsum(dim=1) / steps
    assert torch.allclose(seen["o"][..., :hd], expected, atol=1e-5)
    assert not torch.allclose(seen["o"][..., hd: 2 * hd], 0.5 * values.cumsum(dim=1) / steps,
                              atol=1e-3)


def test_scale_model_keeps_the_shape_that_matters() -> None:
    full = default_config("qwen3_5")
    twin = scale_config_dict(full, vocab_size=512, widths=Widths(hidden=64))
    assert twin["layer_types"] == full["layer_types"][:4]
    for key in ("num_attention_heads", "num_key_value_heads", "linear_num_key_heads",
                "linear_num_value_heads", "max_position_embeddings"):
        assert twin[key] == full[key]
    assert twin["vocab_size"] == 512
    moe = scale_config(default_config("qwen3_moe"))
    assert (moe.num_experts, moe.num_experts_per_tok, moe.moe_intermediate_size) == (128, 8, 64)
    gemma = scale_config_dict(default_config("gemma3"))
    assert gemma["layer_types"].count("full_attention") == 1
    assert len(gemma["layer_types"]) == 6


def test_unknown_architectures_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedArchitectureError, match=r"qwen3_vl.*supported: gemma3, llama"):
        scale_config({"model_type": "qwen3_vl", "num_hidden_layers": 2})
    with pytest.raises(UnsupportedArchitectureError, match="mistral"):
        default_config("mistral")


def test_base_config_comes_from_disk_else_from_the_config_class(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = {**default_config("qwen3_5"), "num_hidden_layers": 8, "hidden_size": 2560}
    config.pop("layer_types")
    (tmp_path / "config.json").write_text(json.dumps(config))
    data, where = base_config_for({"baseModel": str(tmp_path), "architecture": "qwen3_5"})
    assert data["hidden_size"] == 2560 and "local config" in where
    twin = scale_config_dict(data)
    assert twin["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    data, where = base_config_for({"baseModel": "Qwen/No-Such-Model-Here",
                                   "architecture": "qwen3_5_moe"})
    assert "Qwen3_5MoeTextConfig defaults" in where and data["num_experts"] == 256
    with pytest.raises(UnsupportedArchitectureError, match="qwen3_vl"):
        base_config_for({"baseModel": "Qwen/No-Such-Model-Here", "architecture": "qwen3_vl"})


@pytest.mark.parametrize(("full", "heads"), [(2560, 8), (4096, 32), (2560, 16), (5120, 24),
                                             (576, 9)])
def test_the_twin_hidden_size_accepts_the_head_counts_the_base_accepts(
    full: int, heads: int
) -> None:
    from foundry.executors.scale_models import _faithful_hidden

    hidden = _faithful_hidden(full, heads, 128)
    assert hidden <= 4 * 128 or hidden == _faithful_hidden(full, heads, 1)
    for h in range(1, heads + 1):
        assert (hidden % h == 0) == (full % h == 0), (full, heads, hidden, h)
    full_gemma = default_config("gemma3")
    gemma = scale_config(full_gemma)
    for h in range(1, full_gemma["num_attention_heads"] + 1):
        assert (gemma.hidden_size % h == 0) == (full_gemma["hidden_size"] % h == 0)
