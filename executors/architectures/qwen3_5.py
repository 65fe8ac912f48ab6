"""Qwen3.5 dense text (`Qwen3_5ForCausalLM`): Gated DeltaNet layers mixed with gated attention.

`config.layer_types` says which layer is which (three `linear_attention` then one
`full_attention`, repeated, by default). Full attention is Qwen3-Next's: q_proj emits, per
head, the query and an output gate (2 x head_dim rows), q/k RMSNorms over head_dim, and
partial rotary (`partial_rotary_factor` 0.25, multimodal rope sections in
`rope_parameters`). Linear attention is Gated DeltaNet: `linear_num_key_heads` q/k heads,
each shared by `linear_num_value_heads / linear_num_key_heads` value heads; it uses no
positions, so context extension only touches the full-attention rope.
"""

from __future__ import annotations

from foundry.executors.architectures.base import (
    Architecture,
    AttentionLayout,
    LinearAttentionLayout,
    MlpLayout,
    RopeFacts,
    attention_targets,
    mlp_targets,
)

ATTENTION = AttentionLayout(gated_query=True, qk_norms=("q_norm", "k_norm"))
LINEAR_ATTENTION = LinearAttentionLayout()
_MLP = MlpLayout()
ROPE = RopeFacts(carried_keys=("partial_rotary_factor", "mrope_section", "mrope_interleaved"))


def linear_targets(layout: LinearAttentionLayout) -> dict[str, tuple[str, ...]]:
    """Llama-style attention names onto a Gated DeltaNet layer: q/k/v are one fused input
    projection, o is the output projection; the gate (z) and decay (a, b) inputs are only
    reached by their own names."""
    m = layout.module
    fused = (f"{m}.{layout.in_proj_qkv}",)
    return {
        "q_proj": fused,
        "k_proj": fused,
        "v_proj": fused,
        "o_proj": (f"{m}.{layout.out_proj}",),
        layout.in_proj_qkv: fused,
        layout.in_proj_z: (f"{m}.{layout.in_proj_z}",),
        layout.out_proj: (f"{m}.{layout.out_proj}",),
    }


ARCHITECTURE = Architecture(
    family="qwen3_5",
    model_types=("qwen3_5_text", "qwen3_5"),
    causal_lm_class="Qwen3_5ForCausalLM",
    config_class="Qwen3_5TextConfig",
    config_module="transformers.models.qwen3_5.configuration_qwen3_5",
    attention=ATTENTION,
    linear_attention=LINEAR_ATTENTION,
    mlp=_MLP,
    layer_kinds={"full_attention": "attention", "linear_attention": "linear_attention"},
    lora_targets={
        "attention": attention_targets(ATTENTION),
        "linear_attention": linear_targets(LINEAR_ATTENTION),
    },
    lora_mlp_targets=mlp_targets(_MLP),
    rope=ROPE,
)
