"""A rehearsal's projection to full size: parameters, disk per quant tier, peak memory per stage.

A scale-model rehearsal shows whether a recipe's stages *work* on its architecture; this module
says what the same recipe will *cost* on the real base model. Every figure carries `method`,
how it was computed, because each is an estimate of a different kind:

- parameters: exact for the config used: transformers builds the base model on the `meta`
  device (no memory, no weights) from the base config and counts `numel`;
- disk per quant tier: parameters x llama.cpp's nominal bits per weight for that type (the
  K-quant mixes average their tensor types; embeddings and norms kept at higher types make a
  real file a few percent larger);
- peak memory per stage: the textbook sums for what each stage's executor holds at once
  (weights, gradients, AdamW states, activations of one micro-batch, logits), compared with
  the recipe's `hardware.minVramGb` / `recommendedVramGb` and the requested node class's VRAM.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

GIB = 1024**3

# llama.cpp's bits per weight (ggml type sizes; the _M/_S mixes as llama.cpp reports them).
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K_M": 5.69,
    "Q5_K_S": 5.54, "Q5_0": 5.5, "Q5_1": 6.0, "Q4_K_M": 4.85, "Q4_K_S": 4.58, "Q4_0": 4.5,
    "Q4_1": 5.0, "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "Q2_K": 2.63, "IQ4_XS": 4.25,
}

# VRAM of the node classes a hardwareNode names (`<class>@<site>`), in GiB.
NODE_VRAM_GB: dict[str, float] = {
    "rtx-5090": 32, "rtx-4090": 24, "rtx-3090": 24, "rtx-4080": 16, "rtx-a6000": 48,
    "l40s": 48, "l4": 24, "a10": 24, "t4": 16, "a100": 80, "a100-40gb": 40, "h100": 80,
    "h200": 141, "b200": 192,
}

ADAMW_BYTES = 8  # two fp32 moments per parameter
ADAMW_8BIT_BYTES = 2  # bitsandbytes' 8-bit moments
ACTIVATION_BYTES_PER_TOKEN_LAYER = 34  # x hidden, 16-bit, per token per layer, no recompute


def _text_config(base: Mapping[str, Any]) -> Any:
    """The transformers config of the base's text model (what the stages forge)."""
    from foundry.executors.scale_models import architecture_of

    arch = architecture_of(base)
    config_cls = getattr(importlib.import_module(arch.config_module), arch.config_class)
    values = {k: v for k, v in base.items()
              if k not in ("model_type", "transformers_version", "text_config",
                           "vision_config", "quantization_config", "_name_or_path")}
    return config_cls(**values)


def count_parameters(base: Mapping[str, Any]) -> int:
    """The base model's parameter count, built on the meta device from its config."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _text_config(base)
    auto: Any = AutoModelForCausalLM  # untyped in transformers
    with torch.device("meta"):
        model = auto.from_config(config)
    return int(sum(p.numel() for p in model.parameters()))


def _named_size_b(base_model: str) -> float | None:
    """`Qwen/Qwen3.5-27B` -> 27.0: the size a hub name states, to cross-check the config."""
    found = re.findall(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)[bB](?![A-Za-z0-9])", base_model)
    return float(found[-1]) if found else None


def _node_class(hardware_node: str) -> str:
    return hardware_node.split("@", 1)[0]


def _gb(nbytes: float) -> float:
    return round(nbytes / GIB, 2)


def _activations(tokens: int, hidden: int, layers: int, checkpointing: bool) -> float:
    """Activation bytes of one micro-batch: every layer's working set, or with gradient
    checkpointing one hidden state per layer boundary plus one layer recomputed."""
    if checkpointing:
        return tokens * hidden * 2 * layers + tokens * hidden * ACTIVATION_BYTES_PER_TOKEN_LAYER
    return tokens * hidden * ACTIVATION_BYTES_PER_TOKEN_LAYER * layers


def _stage_memory(stage: Mapping[str, Any], params: int, cfg: Mapping[str, Any]
                  ) -> tuple[float, str]:
    """(peak bytes, how) for one stage of the original recipe at full size."""
    hidden, layers = int(cfg.get("hidden_size") or 0), int(cfg.get("num_hidden_layers") or 0)
    vocab = int(cfg.get("vocab_size") or 0)
    kind = str(stage.get("type"))
    weights = 2.0 * params  # bf16 weights
    optimizations = [str(o) for o in stage.get("optimizations") or []]
    ckpt = "gradient_checkpointing" in optimizations
    if kind in ("train", "prune", "context-extend", "compensation-lora"):
        if kind == "train":
            tokens = int(stage.get("batchSize") or 4) * int(stage.get("sequenceLength") or 2048)
        elif kind == "context-extend":
            if not stage.get("trainingSteps"):
                return weights, "bf16 weights (2 B/param): RoPE scaling only, no training steps"
            tokens = 1024  # the executor trains on windows of at most 1024 tokens
        else:
            tokens = 8 * 128 if kind == "prune" else 2048  # the executors' batch x window
        adam = ADAMW_8BIT_BYTES if "optimizer_8bit" in optimizations else ADAMW_BYTES
        act = _activations(tokens, hidden, layers, ckpt)
        logits = tokens * vocab * 4
        peak = weights + 2.0 * params + adam * params + act + logits
        how = (f"full fine-tune: bf16 weights 2 B + bf16 grads 2 B + AdamW {adam} B per param, "
               f"+ activations of {tokens} tokens ({'checkpointed' if ckpt else 'no recompute'}"
               f", {ACTIVATION_BYTES_PER_TOKEN_LAYER} B x hidden per token per layer) + fp32 "
               f"logits {tokens} x vocab {vocab}")
        if kind == "prune":
            how = "head/channel scoring then a masked recovery fine-tune: " + how
        return peak, how
    if kind == "lora":
        quant = bool(stage.get("quantize"))
        per_param = 0.5 if quant and int(stage.get("quantizeBits") or 4) == 4 else 2.0
        rank = int(stage.get("rank") or 16)
        targets = len(stage.get("targetModules") or []) or 4
        adapter = 2 * rank * hidden * targets * layers
        tokens = int(stage.get("batchSize") or 4) * 256  # the executor's 256-token windows
        act = _activations(tokens, hidden, layers, ckpt)
        peak = per_param * params + adapter * (4 + 4 + ADAMW_BYTES) + act + tokens * vocab * 4
        return peak, (f"frozen base at {per_param} B/param ({'4-bit QLoRA' if quant else 'bf16'}"
                      f") + ~{adapter} adapter params (r={rank}, {targets} targets x {layers} "
                      "layers) with fp32 weights, grads and AdamW states + activations and "
                      f"logits of {tokens} tokens")
    if kind in ("eval", "expert-activation-profile", "compact", "expert-prune"):
        tokens = 8 * 128
        kv = 2 * layers * tokens * hidden * 2
        return weights + kv + tokens * vocab * 4, (
            f"inference: bf16 weights 2 B/param + KV cache and fp32 logits of {tokens} tokens "
            "(8 windows of 128, the eval executor's batch)")
    if kind == "quant":
        return 2.0 * params, ("host RAM, not VRAM: llama.cpp's converter writes an f16 GGUF "
                              "(2 B/param) and quantizes from it; nothing runs on the GPU")
    return 0.0, "config or metadata only: no weights held beyond what loading them takes"


def project(base: Mapping[str, Any], config_from: str, recipe: Mapping[str, Any],
            hardware_node: str) -> dict[str, Any]:
    """The full-size projection of `recipe` on the base config `base`."""
    params = count_parameters(base)
    named = _named_size_b(str((recipe.get("source") or {}).get("baseModel") or ""))
    param_note = (f"transformers {_text_config(base).__class__.__name__} built on the meta "
                  f"device from the base config ({config_from}); sum of numel")
    warnings: list[str] = []
    if named is not None and abs(params / 1e9 - named) / named > 0.25:
        warnings.append(f"source.baseModel names {named:g}B but the config used gives "
                        f"{params / 1e9:.2f}B: {config_from}; put the base's config.json on "
                        "this machine (or in the HF cache) for a faithful projection")
    tiers = sorted({str(t) for s in recipe.get("stages") or [] if s.get("type") == "quant"
                    for t in s.get("quantTypes") or []})
    disk = {t: {"gb": _gb(params * BITS_PER_WEIGHT[t] / 8),
                "method": f"{params} params x {BITS_PER_WEIGHT[t]} bits/weight / 8 (llama.cpp "
                          "nominal for the type)"}
            if t in BITS_PER_WEIGHT else {"gb": None, "method": f"no nominal size known for {t}"}
            for t in tiers}
    disk["F16"] = {"gb": _gb(params * 2), "method": f"{params} params x 2 bytes (safetensors "
                                                     "bf16/f16, the unquantized model)"}
    hardware = recipe.get("hardware") or {}
    min_gb, rec_gb = hardware.get("minVramGb"), hardware.get("recommendedVramGb")
    node_class = _node_class(hardware_node)
    node_gb = NODE_VRAM_GB.get(node_class)
    stages = []
    for index, stage in enumerate(recipe.get("stages") or []):
        peak, how = _stage_memory(stage, params, base)
        gb = _gb(peak)
        row: dict[str, Any] = {"index": index, "type": stage.get("type"), "peakGb": gb,
                               "method": how}
        if gb > 0 and stage.get("type") != "quant":
            for key, limit in (("fitsMinVram", min_gb), ("fitsRecommendedVram", rec_gb),
                               ("fitsNode", node_gb)):
                if isinstance(limit, int | float):
                    row[key] = gb <= float(limit)
        stages.append(row)
    return {
        "parameters": {"count": params, "billions": round(params / 1e9, 3),
                       "method": param_note},
        "diskGb": disk,
        "memory": {
            "stages": stages, "minVramGb": min_gb, "recommendedVramGb": rec_gb,
            "node": {"hardwareNode": hardware_node, "class": node_class, "vramGb": node_gb,
                     "method": "known VRAM of the node class" if node_gb is not None else
                     f"node class {node_class!r} has no known VRAM here: not compared"},
        },
        "warnings": warnings,
    }
