"""Architecture support as data: one module per family, looked up by name or by config.

`lookup(name)` accepts a family name (`qwen3_5`), a transformers `model_type`
(`qwen3_5_text`) or a causal-LM class name (`Qwen3_5ForCausalLM`), in any case, and returns
the family's `Architecture` or None; `for_config(config)` does the same from a loaded
transformers config and raises `UnsupportedArchitectureError` when no family knows it.
Importing this package imports no ML library.
"""

from __future__ import annotations

from typing import Any

from foundry.executors.architectures import gemma3, llama, qwen3, qwen3_5, qwen3_5_moe, qwen3_moe
from foundry.executors.architectures.base import (
    Architecture,
    AttentionLayout,
    LayerKind,
    LinearAttentionLayout,
    MlpLayout,
    MoeLayout,
    RopeFacts,
)
from foundry.executors.errors import ExecutorError

__all__ = [
    "FAMILIES",
    "Architecture",
    "AttentionLayout",
    "LayerKind",
    "LinearAttentionLayout",
    "MlpLayout",
    "MoeLayout",
    "RopeFacts",
    "UnsupportedArchitectureError",
    "for_config",
    "lookup",
    "supported",
]

FAMILIES: dict[str, Architecture] = {
    module.ARCHITECTURE.family: module.ARCHITECTURE
    for module in (llama, qwen3, qwen3_5, qwen3_moe, qwen3_5_moe, gemma3)
}

_BY_NAME: dict[str, Architecture] = {}
for _arch in FAMILIES.values():
    for _name in (_arch.family, *_arch.model_types, _arch.causal_lm_class):
        _BY_NAME[_name.lower()] = _arch


class UnsupportedArchitectureError(ExecutorError, LookupError):
    """Raised when a model or recipe names an architecture no family module describes."""

    code = "unsupported_architecture"

    def __init__(self, name: str, where: str = "") -> None:
        self.name, self.where = name, where
        at = f" ({where})" if where else ""
        super().__init__(
            f"architecture {name!r}{at} is not supported; supported: {', '.join(supported())}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.where))


def supported() -> list[str]:
    """The family names, sorted."""
    return sorted(FAMILIES)


def lookup(name: str) -> Architecture | None:
    """The family `name` belongs to (family, model_type or class name, any case), or None."""
    return _BY_NAME.get(name.strip().lower())


def for_config(config: Any) -> Architecture:
    """The family of a transformers config, by `model_type`, then by `architectures`."""
    model_type = str(getattr(config, "model_type", "") or "")
    found = lookup(model_type) if model_type else None
    for name in getattr(config, "architectures", None) or []:
        found = found or lookup(str(name))
    if found is None:
        raise UnsupportedArchitectureError(model_type or "?", "the model's config.json")
    return found
