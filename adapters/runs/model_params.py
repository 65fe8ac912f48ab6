"""How many parameters a stage's model has, and how many a token uses (MoE): read from the
safetensors headers and config.json the stage wrote (an executor that reports `params` itself
is believed; the orchestrator fills in what it leaves out).

An artifact's `forgedParamsB` used to appear only when an executor happened to report
`params`, and `activeParamsB` never. The count here is exact (the sum of every tensor's
element count in the headers; no tensor data is read). For a mixture of experts, the active
count is every non-expert parameter (attention, embeddings, norms, routers, shared experts)
plus the routed experts' parameters times top-k / experts: a token goes through top-k of them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

# The header is JSON behind an 8-byte little-endian length; a real one is at most a few MB.
MAX_HEADER_BYTES = 100 * 1024 * 1024
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_topk", "top_k")


def tensor_sizes(model_dir: Path) -> dict[str, int]:
    """{tensor name: element count} of every *.safetensors file in `model_dir`."""
    sizes: dict[str, int] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        try:
            sizes.update(_header_sizes(path))
        except (struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
            msg = f"{path.name}: not a readable safetensors file ({type(e).__name__}: {e})"
            raise ValueError(msg[:500]) from None
    return sizes


def _header_sizes(path: Path) -> dict[str, int]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            msg = f"a header of {length} bytes is not a safetensors header"
            raise ValueError(msg)
        header: dict[str, Any] = json.loads(f.read(length))
    return {name: math.prod(int(d) for d in info["shape"])
            for name, info in header.items() if name != "__metadata__"}


def _config_value(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for scope in (config, config.get("text_config") or {}):
        for key in keys:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def is_routed_expert(name: str) -> bool:
    """A routed expert's weight (fused `experts.gate_up_proj` or unfused `experts.3.down_proj`);
    a shared expert sees every token and counts as always active."""
    return ".experts." in name and "shared_expert" not in name


def count_params(model_dir: Path) -> dict[str, int] | None:
    """{"params": total, "activeParams": per token (MoE only)}; None without safetensors."""
    sizes = tensor_sizes(model_dir)
    if not sizes:
        return None
    total = sum(sizes.values())
    out = {"params": total}
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    experts = _config_value(config, EXPERT_COUNT_KEYS)
    top_k = _config_value(config, TOP_K_KEYS)
    routed = sum(n for name, n in sizes.items() if is_routed_expert(name))
    if experts and top_k and routed:
        out["activeParams"] = total - routed + round(routed * min(top_k, experts) / experts)
    return out
