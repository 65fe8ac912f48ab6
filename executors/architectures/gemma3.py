"""Gemma 3 text (`Gemma3ForCausalLM`): sliding-window and global attention, both softmax GQA.

`layer_types` alternates `sliding_attention` (five) and `full_attention` (one); both have
q/k/v/o projections and q/k RMSNorms over an explicit head_dim, so heads prune alike. transformers
5 keeps one rope dict per layer type in `rope_parameters` (local base 10k, global 1M): a longer
context scales the global layers only, as Gemma 3's own long-context checkpoints do.
"""

from __future__ import annotations

from foundry.executors.architectures.base import (
    Architecture,
    AttentionLayout,
    MlpLayout,
    RopeFacts,
    attention_targets,
    mlp_targets,
)

_ATTENTION = AttentionLayout(qk_norms=("q_norm", "k_norm"))
_MLP = MlpLayout()

ARCHITECTURE = Architecture(
    family="gemma3",
    model_types=("gemma3_text",),
    causal_lm_class="Gemma3ForCausalLM",
    config_class="Gemma3TextConfig",
    config_module="transformers.models.gemma3.configuration_gemma3",
    attention=_ATTENTION,
    mlp=_MLP,
    layer_kinds={"full_attention": "attention", "sliding_attention": "attention"},
    lora_targets={"attention": attention_targets(_ATTENTION)},
    lora_mlp_targets=mlp_targets(_MLP),
    rope=RopeFacts(layout="per_layer_type", scaled_layer_types=("full_attention",)),
)
