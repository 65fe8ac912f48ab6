"""Qwen3-MoE (`Qwen3MoeForCausalLM`): Qwen3 attention, experts fused per layer, top-k router.

transformers 5 holds a layer's experts as two tensors, `mlp.experts.gate_up_proj`
[experts, 2 x moe_intermediate, hidden] and `mlp.experts.down_proj`
[experts, hidden, moe_intermediate], with the router at `mlp.gate`. Layers listed in
`mlp_only_layers` (or off `decoder_sparse_step`) keep a dense `mlp` instead.
"""

from __future__ import annotations

from foundry.executors.architectures.base import (
    Architecture,
    AttentionLayout,
    MlpLayout,
    MoeLayout,
    attention_targets,
    mlp_targets,
)

_ATTENTION = AttentionLayout(qk_norms=("q_norm", "k_norm"))
_MLP = MlpLayout()  # the dense layers, if any
_MOE = MoeLayout()

ARCHITECTURE = Architecture(
    family="qwen3_moe",
    model_types=("qwen3_moe",),
    causal_lm_class="Qwen3MoeForCausalLM",
    config_class="Qwen3MoeConfig",
    config_module="transformers.models.qwen3_moe.configuration_qwen3_moe",
    attention=_ATTENTION,
    mlp=_MLP,
    moe=_MOE,
    layer_kinds={"full_attention": "attention", "sliding_attention": "attention"},
    lora_targets={"attention": attention_targets(_ATTENTION)},
    lora_mlp_targets=mlp_targets(_MLP),
    lora_parameter_targets={
        "gate_proj": ("mlp.experts.gate_up_proj",),
        "up_proj": ("mlp.experts.gate_up_proj",),
        "down_proj": ("mlp.experts.down_proj",),
    },
)
