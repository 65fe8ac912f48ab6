"""What a quant stage produces: its own quantTypes plus the recipe's quantTiers, one rule for
the real executor and the fake one, and what this worker cannot produce, said up front.

Light on purpose (no llama.cpp import): forge/run asks it before a run starts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from foundry.executors.errors import ExecutorError

WRITABLE_FORMAT = "gguf"  # the one quant format the executors here write (llama.cpp's)
# llama.cpp's file types (LLAMA_FTYPE_MOSTLY_* of the llama-cpp-python installed here) and
# the converter's F32/F16: what it can write. The fake executors use this list; the real one
# asks the llama.cpp it loads (a unit test keeps the two equal).
GGUF_TYPES = frozenset({
    "F32", "F16", "BF16", "Q1_0", "Q2_0", "NVFP4",
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S",
    "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S",
    "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE",
})


def requested_types(stage: Mapping[str, Any], recipe: Mapping[str, Any]) -> list[str]:
    """The stage's quantTypes, then the recipe's gguf quantTiers variants; upper-case, unique."""
    fmt = str(stage.get("format", WRITABLE_FORMAT))
    if fmt != WRITABLE_FORMAT:
        raise ExecutorError(f"quant format {fmt!r} is not supported: this worker writes gguf only")
    wanted = [str(t) for t in stage.get("quantTypes") or []]
    for tier in recipe.get("quantTiers") or []:
        if isinstance(tier, Mapping) and tier.get("format") == WRITABLE_FORMAT:
            wanted.extend(str(v) for v in tier.get("variants") or [])
    seen: dict[str, None] = {}
    for name in wanted:
        seen.setdefault(name.strip().upper(), None)
    return list(seen)


def unproducible_tiers(tiers: Any, known_types: Callable[[], Collection[str]]) -> list[str]:
    """Each quantTiers format or variant this worker cannot write, named with the reason
    (empty when every tier yields its variants). `known_types` is only called when a gguf
    tier is present: the real one loads llama.cpp."""
    problems: list[str] = []
    known: Collection[str] | None = None
    for tier in tiers or []:
        fmt = str(tier.get("format"))
        variants = [str(v) for v in tier.get("variants") or []]
        if fmt != WRITABLE_FORMAT:
            problems.append(f"{fmt} {', '.join(variants)} (format {fmt!r}: this worker writes "
                            f"{WRITABLE_FORMAT} only)")
            continue
        known = known_types() if known is None else known
        problems.extend(f"gguf {v} (llama.cpp's quantize does not know {v!r})"
                        for v in variants if v.strip().upper() not in known)
    return problems
