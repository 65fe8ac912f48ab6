"""Qwen3.5-MoE text (`Qwen3_5MoeForCausalLM`): Qwen3.5's layer mix with a sparse MLP.

Every layer's `mlp` is a sparse block: fused experts (`mlp.experts.gate_up_proj`,
`mlp.experts.down_proj`), the top-k router at `mlp.gate`, and a shared expert every token
goes through (`mlp.shared_expert`, a gated MLP, scaled by `mlp.shared_expert_gate`).
"""

from __future__ import annotations

from foundry.executors.architectures.base import (
    Architecture,
    MlpLayout,
    MoeLayout,
    attention_targets,
    mlp_targets,
)
from foundry.executors.architectures.qwen3_5 import (
    ATTENTION,
    LINEAR_ATTENTION,
    ROPE,
    linear_targets,
)

_SHARED = MlpLayout(module="mlp.shared_expert", intermediate_key="shared_expert_intermediate_size")
_MOE = MoeLayout(
    shared_expert="shared_expert",
    shared_expert_gate="shared_expert_gate",
    shared_intermediate_key="shared_expert_intermediate_size",
)

ARCHITECTURE = Architecture(
    family="qwen3_5_moe",
    model_types=("qwen3_5_moe_text", "qwen3_5_moe"),
    causal_lm_class="Qwen3_5MoeForCausalLM",
    config_class="Qwen3_5MoeTextConfig",
    config_module="transformers.models.qwen3_5_moe.configuration_qwen3_5_moe",
    attention=ATTENTION,
    linear_attention=LINEAR_ATTENTION,
    mlp=None,
    moe=_MOE,
    layer_kinds={"full_attention": "attention", "linear_attention": "linear_attention"},
    lora_targets={
        "attention": attention_targets(ATTENTION),
        "linear_attention": linear_targets(LINEAR_ATTENTION),
    },
    lora_moe_targets=mlp_targets(_SHARED),
    lora_parameter_targets={
        "gate_proj": ("mlp.experts.gate_up_proj",),
        "up_proj": ("mlp.experts.gate_up_proj",),
        "down_proj": ("mlp.experts.down_proj",),
    },
    rope=ROPE,
)
