"""Qwen3 dense (`Qwen3ForCausalLM`): Llama-like attention plus per-head-dim q/k RMSNorms.

`head_dim` is explicit (128 at full size), so heads can go without touching hidden_size;
`layer_types` is `full_attention` everywhere unless sliding windows are configured, which
keeps the same projections.
"""

from __future__ import annotations

from foundry.executors.architectures.base import (
    Architecture,
    AttentionLayout,
    MlpLayout,
    attention_targets,
    mlp_targets,
)

_ATTENTION = AttentionLayout(qk_norms=("q_norm", "k_norm"))
_MLP = MlpLayout()

ARCHITECTURE = Architecture(
    family="qwen3",
    model_types=("qwen3",),
    causal_lm_class="Qwen3ForCausalLM",
    config_class="Qwen3Config",
    config_module="transformers.models.qwen3.configuration_qwen3",
    attention=_ATTENTION,
    mlp=_MLP,
    layer_kinds={"full_attention": "attention", "sliding_attention": "attention"},
    lora_targets={"attention": attention_targets(_ATTENTION)},
    lora_mlp_targets=mlp_targets(_MLP),
)
