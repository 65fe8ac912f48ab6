"""The steps a recipe implies beyond its stages: recipe-level fields that must act in a run.

`quantTiers` promise quantized variants and `evaluationBenchmarks` promise scores (the design's
steps 5 and 3). A recipe that says so without a quant stage, or without an eval stage that
runs those benchmarks, gets the missing step appended to the end of its last cycle. Each
implied step is an ordinary stage config plus `impliedBy` (the field it comes from), so it is
recorded in the run's events like any stage, shows in lineage and is covered by alloyHash.

A pure function of the frozen recipe: a resume, a replay or a second run of the same recipe
plans exactly the same steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IMPLIED_BY = "impliedBy"
# Stage types the orchestrator carries out itself after the seal (they publish the sealed
# artifact), not through an executor. `deliver` is the legacy name, migrated on import.
PUBLISH_TYPES = frozenset({"publish", "deliver"})


def _names(entries: Any) -> list[str]:
    return [str(b.get("name")) if isinstance(b, Mapping) else str(b) for b in entries or []]


def covered_benchmarks(recipe: Mapping[str, Any]) -> set[str]:
    """The benchmark names the recipe's own eval stages run."""
    return {name for s in recipe.get("stages") or [] if s.get("type") == "eval"
            for name in _names(s.get("benchmarks"))}


def tier_variants(recipe: Mapping[str, Any]) -> dict[str, list[str]]:
    """format -> its variants over every quantTiers entry, in order, each once."""
    formats: dict[str, list[str]] = {}
    for tier in recipe.get("quantTiers") or []:
        variants = formats.setdefault(str(tier.get("format")), [])
        variants.extend(v for v in map(str, tier.get("variants") or []) if v not in variants)
    return formats


def implied_steps(recipe: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stage configs the recipe implies, in the order they run after its own stages."""
    stages = recipe.get("stages") or []
    steps: list[dict[str, Any]] = []
    if not any(s.get("type") == "quant" for s in stages):
        steps.extend({"type": "quant", "format": fmt, "quantTypes": variants,
                      IMPLIED_BY: "quantTiers"}
                     for fmt, variants in tier_variants(recipe).items())
    covered = covered_benchmarks(recipe)
    missing = [b for b in recipe.get("evaluationBenchmarks") or []
               if _names([b])[0] not in covered]
    if missing:
        steps.append({"type": "eval", "benchmarks": [dict(b) for b in missing],
                      IMPLIED_BY: "evaluationBenchmarks"})
    return steps
