"""Scale models: a small, random-initialised twin of a base model, built from its config.

A scale model keeps what decides whether a recipe's stages work on the base model and
shrinks what only decides its cost:

- kept: the transformers class (through `config.model_type`), the layer pattern
  (`layer_types`, cut to whole periods of it), attention and KV head counts (so GQA
  groups, `minHeadsPerLayer` and `minKvHeadsPerLayer` mean what they mean at full size),
  linear-attention key and value head counts, expert count and top-k, rope type, theta,
  partial rotary factor, context length, tied embeddings, and the vocabulary (unless
  `vocab_size` overrides it);
- shrunk: hidden size, head dims, MLP and expert widths, the number of layers. The hidden
  size is chosen so that every head count up to the base's divides it exactly when it divides
  the base's hidden size: config classes that check `hidden_size % heads` (Llama, Gemma 3)
  then accept or refuse a pruned head count on the twin as they would at full size.

`scale_config(config)` returns the twin's config; `build_scale_model(config, out_dir)`
writes it with random weights (seeded, float32) and, when given, a tokenizer. The base
config may be a transformers config, a config.json dict or a directory holding one;
multimodal checkpoints (a `text_config` inside) give their text model.
torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.architectures import Architecture, UnsupportedArchitectureError, lookup


@dataclass(frozen=True)
class Widths:
    """The twin's small sizes. Head counts are not here: they are kept from the base."""

    hidden: int = 128
    head_dim: int = 32
    intermediate: int = 256
    moe_intermediate: int = 64
    linear_head_dim: int = 32
    max_periods: int = 1  # how many whole periods of the layer pattern to keep
    min_layers: int = 2


def _base_dict(base: Any) -> dict[str, Any]:
    if isinstance(base, (str, Path)):
        path = Path(base)
        path = path / "config.json" if path.is_dir() else path
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    elif isinstance(base, Mapping):
        data = dict(base)
    else:
        data = base.to_dict()
    text = data.get("text_config")
    if isinstance(text, Mapping):  # a multimodal checkpoint: its language model
        merged = dict(text)
        for key in ("tie_word_embeddings",):
            if key in data and key not in merged:
                merged[key] = data[key]
        data = merged
    return data


def architecture_of(data: Mapping[str, Any]) -> Architecture:
    """The family of a config dict, by model_type then architectures; unknown raises."""
    model_type = str(data.get("model_type") or "")
    found = lookup(model_type) if model_type else None
    for name in data.get("architectures") or []:
        found = found or lookup(str(name))
    if found is None:
        raise UnsupportedArchitectureError(model_type or "?", "scale model config")
    return found


def _period(types: list[str]) -> int:
    """The length of the shortest prefix whose repetition gives `types` (the layer pattern)."""
    for n in range(1, len(types) + 1):
        if all(types[i] == types[i % n] for i in range(len(types))):
            return n
    return len(types)


def _layer_count(types: list[str], widths: Widths) -> int:
    period = _period(types)
    # A pattern that never repeats (or is longer than the model) is kept whole.
    count = min(len(types), period * widths.max_periods)
    return max(min(widths.min_layers, len(types)), count)


def _faithful_hidden(full: int, heads: int, wanted: int) -> int:
    """A hidden size near `wanted` divisible by exactly the head counts (1..heads) that divide
    `full`. The lcm of those divisors qualifies (it divides `full`, so no other count divides
    it); a multiple of it is taken when it stays faithful and gets closer to `wanted`."""
    divisors = [h for h in range(1, heads + 1) if full % h == 0]
    base = math.lcm(*divisors)
    if base > 16 * wanted:  # e.g. 5040 = lcm(1..10): no small faithful size exists
        return wanted
    best = base
    for k in range(2, max(2, wanted // base + 2)):
        candidate = base * k
        faithful = all((candidate % h == 0) == (h in divisors) for h in range(1, heads + 1))
        if faithful and abs(candidate - wanted) < abs(best - wanted):
            best = candidate
    return best


def _scaled_sections(sections: list[int], rotary_half: int) -> list[int]:
    """Multimodal rope sections rescaled to sum to the twin's rotary half-dimension."""
    total = sum(sections)
    scaled = [max(1, s * rotary_half // total) for s in sections]
    scaled[0] += rotary_half - sum(scaled)
    return scaled


def scale_config_dict(base: Any, *, vocab_size: int | None = None,
                      widths: Widths = Widths()) -> dict[str, Any]:
    """The twin's config as a dict (model_type kept, `architectures` set to the causal LM)."""
    data = _base_dict(base)
    arch = architecture_of(data)
    out = dict(data)
    out["model_type"] = arch.model_types[0]
    out["architectures"] = [arch.causal_lm_class]
    layers = int(data.get("num_hidden_layers") or 0)
    types = list(data.get("layer_types") or [])
    if not types and arch.linear_attention is not None:
        # Qwen3.5 derives the pattern from full_attention_interval when none is stored.
        interval = int(data.get("full_attention_interval") or 4)
        types = ["linear_attention" if (i + 1) % interval else "full_attention"
                 for i in range(layers)]
    count = _layer_count(types, widths) if types else min(layers, widths.min_layers)
    out["num_hidden_layers"] = count
    if types:
        out["layer_types"] = types[:count]
    if data.get("mlp_only_layers"):
        out["mlp_only_layers"] = [i for i in data["mlp_only_layers"] if i < count]
    heads = int(data.get("num_attention_heads") or 1)
    full_hidden = int(data.get("hidden_size") or widths.hidden)
    out["hidden_size"] = _faithful_hidden(full_hidden, heads, widths.hidden)
    out["head_dim"] = widths.head_dim
    out["intermediate_size"] = widths.intermediate
    for key, value in (
        ("moe_intermediate_size", widths.moe_intermediate),
        ("shared_expert_intermediate_size", widths.moe_intermediate),
        ("linear_key_head_dim", widths.linear_head_dim),
        ("linear_value_head_dim", widths.linear_head_dim),
        ("query_pre_attn_scalar", widths.head_dim),
    ):
        if key in data:
            out[key] = value
    if vocab_size is not None:
        out["vocab_size"] = vocab_size
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            ids = out.get(key)
            if isinstance(ids, int) and ids >= vocab_size:
                out[key] = None
            elif isinstance(ids, list):
                out[key] = [i for i in ids if i < vocab_size] or None
    rope = out.get("rope_parameters") or out.get("rope_scaling")
    if isinstance(rope, Mapping) and "mrope_section" in rope:
        factor = float(rope.get("partial_rotary_factor", 1.0))
        half = int(widths.head_dim * factor) // 2
        out["rope_parameters"] = {
            **rope, "mrope_section": _scaled_sections(list(rope["mrope_section"]), half)
        }
    for key in ("text_config", "vision_config", "quantization_config", "_name_or_path"):
        out.pop(key, None)
    return out


def scale_config(base: Any, *, vocab_size: int | None = None, widths: Widths = Widths()) -> Any:
    """The twin's transformers config (the family's text config class)."""
    import importlib

    data = scale_config_dict(base, vocab_size=vocab_size, widths=widths)
    arch = architecture_of(data)
    config_cls = getattr(importlib.import_module(arch.config_module), arch.config_class)
    values = {k: v for k, v in data.items() if k not in ("model_type", "transformers_version")}
    return config_cls(**values)


def default_config(name: str) -> dict[str, Any]:
    """The config dict of `name`'s config class with its defaults (the full-size shape)."""
    import importlib

    arch = lookup(name)
    if arch is None:
        raise UnsupportedArchitectureError(name, "source.architecture")
    config_cls = getattr(importlib.import_module(arch.config_module), arch.config_class)
    data: dict[str, Any] = config_cls().to_dict()
    data["architectures"] = [arch.causal_lm_class]
    return data


def base_config_for(source: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The base model's config for a recipe `source`, and where it came from.

    Tried in order: `baseModel` as a local directory holding config.json; `baseModel` as a hub
    id whose config.json is in the huggingface_hub cache (never downloaded here); else the
    defaults of the config class of `source.architecture` (the family's full-size shape).
    An architecture no family describes raises `UnsupportedArchitectureError`.
    """
    base_model = str(source.get("baseModel") or "")
    path = Path(base_model).expanduser() if base_model else None
    if path is not None and (path / "config.json").is_file():
        return _base_dict(path), f"local config {path / 'config.json'}"
    if base_model and "/" in base_model and path is not None and not path.exists():
        try:
            from huggingface_hub import hf_hub_download

            cached = hf_hub_download(base_model, "config.json", revision=source.get("revision"),
                                     local_files_only=True)
            return _base_dict(Path(cached)), f"huggingface_hub cache {cached}"
        except Exception:  # not cached (LocalEntryNotFoundError), a broken entry, ...
            pass
    architecture = str(source.get("architecture") or "")
    arch = lookup(architecture)
    if arch is None:
        raise UnsupportedArchitectureError(architecture or "?", "source.architecture")
    return default_config(architecture), f"{arch.config_class} defaults (no config.json found)"


def build_scale_model(base: Any, out_dir: Path, *, tokenizer: Any = None,
                      vocab_size: int | None = None, widths: Widths = Widths(),
                      seed: int = 0) -> Path:
    """Write a random-initialised twin of `base` (seeded, float32) and `tokenizer` to out_dir.

    With a tokenizer and no `vocab_size`, the twin's vocabulary is the tokenizer's length when
    that exceeds the base's (added special tokens), so every id it emits has an embedding.
    The caller's torch random state is left as it was.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if tokenizer is not None and vocab_size is None:
        base_vocab = int(_base_dict(base).get("vocab_size") or 0)
        if len(tokenizer) > base_vocab:
            vocab_size = len(tokenizer)
    config = scale_config(base, vocab_size=vocab_size, widths=widths)
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            token_id = getattr(tokenizer, key, None)
            if token_id is not None:
                setattr(config, key, token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        auto: Any = AutoModelForCausalLM  # untyped in transformers
        model = auto.from_config(config, dtype=torch.float32)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
