"""What an architecture family looks like to the stages: module names, layer kinds, rope facts.

An `Architecture` is data. Structured pruning, LoRA target mapping and context extension read
it instead of branching on the family's name, the way llama.cpp's converter keeps one class per
architecture and transformers one `models/<family>/` folder. Each family module
(`llama.py`, `qwen3_5.py`, ...) builds one `Architecture`; the tests check every map against a
real, randomly initialised model of that family, so a wrong name fails a test.

Layer kinds:
- `attention`: softmax attention with q/k/v/o projections, GQA (one KV head shared by
  `num_attention_heads // num_key_value_heads` query heads), optionally per-head-dim q/k
  norms and a per-head output gate packed into q_proj (Qwen3.5, Qwen3-Next);
- `linear_attention`: Gated DeltaNet (Qwen3.5): `linear_num_key_heads` q/k heads, each
  shared by `linear_num_value_heads // linear_num_key_heads` value heads.

This module imports nothing heavy: `forge/run` reads it to refuse an unknown architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LayerKind = Literal["attention", "linear_attention"]


@dataclass(frozen=True)
class AttentionLayout:
    """Softmax attention: where it sits on a decoder layer and how q_proj rows are laid out."""

    module: str = "self_attn"
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    # q_proj rows per head are [query (head_dim), gate (head_dim)]: the output is
    # attn * sigmoid(gate), so a pruned head loses both halves (Qwen3NextAttention).
    gated_query: bool = False
    # RMSNorms over head_dim shared by every head: nothing to cut when heads go.
    qk_norms: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinearAttentionLayout:
    """Gated DeltaNet: in_proj_qkv rows are [q (key heads), k (key heads), v (value heads)]."""

    module: str = "linear_attn"
    in_proj_qkv: str = "in_proj_qkv"
    in_proj_z: str = "in_proj_z"  # output gate, one head_v_dim block per value head
    in_proj_a: str = "in_proj_a"  # one row per value head
    in_proj_b: str = "in_proj_b"  # one row per value head
    conv1d: str = "conv1d"  # depthwise over the q/k/v channels, same order as in_proj_qkv
    out_proj: str = "out_proj"
    per_value_head: tuple[str, ...] = ("A_log", "dt_bias")  # vectors, one entry per value head
    norm: str = "norm"  # over head_v_dim, shared by every value head


@dataclass(frozen=True)
class MlpLayout:
    """A gated MLP: down(act(gate(x)) * up(x)); channels are gate/up rows, down columns."""

    module: str = "mlp"
    gate_proj: str = "gate_proj"
    up_proj: str = "up_proj"
    down_proj: str = "down_proj"
    intermediate_key: str = "intermediate_size"


@dataclass(frozen=True)
class MoeLayout:
    """Mixture of experts as transformers 5 fuses it: one 3-D tensor per projection per layer.

    `gate_up_proj` is [experts, 2 * moe_intermediate, hidden] (gate rows, then up rows);
    `down_proj` is [experts, hidden, moe_intermediate]. The router is a Linear-like module
    whose weight is [experts, hidden].
    """

    module: str = "mlp"
    experts: str = "experts"
    gate_up_proj: str = "gate_up_proj"
    down_proj: str = "down_proj"
    router: str = "gate"
    shared_expert: str | None = None  # a gated MLP every token goes through (Qwen3.5-MoE)
    shared_expert_gate: str | None = None  # its scalar gate, [1, hidden]
    experts_key: str = "num_experts"
    top_k_key: str = "num_experts_per_tok"
    intermediate_key: str = "moe_intermediate_size"
    shared_intermediate_key: str | None = None


@dataclass(frozen=True)
class RopeFacts:
    """How `config.rope_parameters` is shaped and what context extension must carry over.

    `flat`: one dict for the model. `per_layer_type`: a dict per layer type (Gemma 3 keeps
    `sliding_attention` and `full_attention` apart); only `scaled_layer_types` get scaled.
    `carried_keys` are kept when the rope type changes (partial rotary, multimodal sections).
    """

    layout: Literal["flat", "per_layer_type"] = "flat"
    scaled_layer_types: tuple[str, ...] = ()
    carried_keys: tuple[str, ...] = ("partial_rotary_factor",)
    # The attention of these layer kinds uses positions; linear attention does not.
    positional_kinds: tuple[LayerKind, ...] = ("attention",)


@dataclass(frozen=True)
class Architecture:
    """One family: its transformers classes, layer kinds, module maps and rope facts."""

    family: str
    model_types: tuple[str, ...]  # config.model_type values that belong to this family
    causal_lm_class: str  # transformers class a text checkpoint loads as
    config_class: str  # transformers config class of the text model
    config_module: str  # where config_class lives (transformers.models.<...>)
    attention: AttentionLayout
    mlp: MlpLayout | None = MlpLayout()
    moe: MoeLayout | None = None
    linear_attention: LinearAttentionLayout | None = None
    # config.layer_types value -> kind; a config without layer_types is all `default_layer_type`.
    layer_kinds: Mapping[str, LayerKind] = field(
        default_factory=lambda: {"full_attention": "attention"}
    )
    default_layer_type: str = "full_attention"
    # Recipe targetModules -> Linear modules (paths under a decoder layer) of the token mixer
    # of each layer kind. A recipe written for Llama-style attention (q_proj, k_proj, v_proj,
    # o_proj) reaches a Gated DeltaNet layer through its fused input projection and its
    # output projection.
    lora_targets: Mapping[LayerKind, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    # ... of a layer's dense MLP (gate_proj, up_proj, down_proj);
    lora_mlp_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # ... of the Linear modules of a sparse block (a shared expert);
    lora_moe_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # ... and of fused expert parameters, which are no Linear modules: peft reaches them
    # through `target_parameters`.
    lora_parameter_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rope: RopeFacts = RopeFacts()
    notes: tuple[str, ...] = ()

    def layer_types(self, config: Any) -> list[str]:
        """config.layer_types, or the default type for every layer when the config has none."""
        count = int(config.num_hidden_layers)
        types = getattr(config, "layer_types", None)
        if not types:
            return [self.default_layer_type] * count
        return [str(t) for t in types]

    def layer_kinds_of(self, config: Any) -> list[LayerKind]:
        """The kind of every layer, in order; an unknown layer type raises ValueError."""
        kinds: list[LayerKind] = []
        for i, layer_type in enumerate(self.layer_types(config)):
            kind = self.layer_kinds.get(layer_type)
            if kind is None:
                raise ValueError(
                    f"{self.family}: layer {i} has layer type {layer_type!r}; this family "
                    f"knows {', '.join(sorted(self.layer_kinds))}"
                )
            kinds.append(kind)
        return kinds

    def is_sparse(self, layer: Any) -> bool:
        """Whether a decoder layer's MLP is a sparse (mixture-of-experts) block."""
        if self.moe is None:
            return False
        return hasattr(getattr(layer, self.moe.module, None), self.moe.experts)

    def kind_module(self, kind: LayerKind) -> str:
        """The attribute of a decoder layer that holds its token mixer of `kind`."""
        if kind == "linear_attention":
            if self.linear_attention is None:
                raise ValueError(f"{self.family} has no linear-attention layers")
            return self.linear_attention.module
        return self.attention.module


def attention_targets(layout: AttentionLayout) -> dict[str, tuple[str, ...]]:
    """The four attention projections, as paths under a decoder layer."""
    m = layout.module
    return {
        "q_proj": (f"{m}.{layout.q_proj}",),
        "k_proj": (f"{m}.{layout.k_proj}",),
        "v_proj": (f"{m}.{layout.v_proj}",),
        "o_proj": (f"{m}.{layout.o_proj}",),
    }


def mlp_targets(layout: MlpLayout, under: str = "") -> dict[str, tuple[str, ...]]:
    """gate_proj / up_proj / down_proj of a dense MLP (or of a shared expert `under` a path)."""
    base = under or layout.module
    return {
        "gate_proj": (f"{base}.{layout.gate_proj}",),
        "up_proj": (f"{base}.{layout.up_proj}",),
        "down_proj": (f"{base}.{layout.down_proj}",),
    }

