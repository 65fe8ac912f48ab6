"""Llama (`LlamaForCausalLM`): softmax GQA attention in every layer, a gated MLP, full rotary."""

from __future__ import annotations

from foundry.executors.architectures.base import (
    Architecture,
    AttentionLayout,
    MlpLayout,
    attention_targets,
    mlp_targets,
)

_ATTENTION = AttentionLayout()
_MLP = MlpLayout()

ARCHITECTURE = Architecture(
    family="llama",
    model_types=("llama",),
    causal_lm_class="LlamaForCausalLM",
    config_class="LlamaConfig",
    config_module="transformers.models.llama.configuration_llama",
    attention=_ATTENTION,
    mlp=_MLP,
    lora_targets={"attention": attention_targets(_ATTENTION)},
    lora_mlp_targets=mlp_targets(_MLP),
    notes=("the config checks hidden_size % num_attention_heads, so head counts it rejects "
           "are skipped by pruning",),
)
