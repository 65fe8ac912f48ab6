"""The steps a recipe implies (`foundry.domain.implied_steps`) and where the run plan puts
them: pure functions of the frozen recipe, so every run, resume and replay plans alike."""

from __future__ import annotations

from typing import Any

import pytest

from foundry.adapters.runs.orchestrator import plan
from foundry.adapters.runs.rehearsal import _producible_tiers
from foundry.domain.implied_steps import implied_steps
from foundry.executors.fake import build_fake_registry


def recipe(**fields: Any) -> dict[str, Any]:
    return {"stages": [{"type": "prune", "level": 0.1}, {"type": "train"}], "cycles": 2,
            **fields}


def test_a_recipe_without_tiers_or_benchmarks_implies_nothing() -> None:
    assert implied_steps(recipe()) == []
    assert [(c, i) for c, i, _s in plan(recipe())] == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_tiers_imply_one_quant_step_per_format_and_benchmarks_one_eval_at_the_very_end() -> None:
    data = recipe(quantTiers=[{"format": "gguf", "variants": ["Q8_0"]},
                              {"format": "gguf", "variants": ["Q4_K_M", "Q8_0"]}],
                  evaluationBenchmarks=[{"name": "perplexity"}])
    steps = plan(data)
    assert [(c, i, s["type"], s.get("impliedBy")) for c, i, s in steps[-2:]] == [
        (2, 2, "quant", "quantTiers"), (2, 3, "eval", "evaluationBenchmarks")]
    assert steps[-2][2]["quantTypes"] == ["Q8_0", "Q4_K_M"]
    assert plan(data) == steps  # the same recipe, the same plan


def test_a_recipe_quant_stage_takes_the_tiers_itself_and_publish_stages_are_not_planned(
) -> None:
    data = recipe(quantTiers=[{"format": "gguf", "variants": ["Q8_0"]}])
    data["stages"] += [{"type": "quant", "format": "gguf", "quantTypes": ["F16"]},
                       {"type": "publish", "target": "file:///tmp/x"}]
    assert implied_steps(data) == []
    assert [s["type"] for c, _i, s in plan(data) if c == 2] == ["prune", "train", "quant"]


def test_a_rehearsal_passes_over_the_tiers_a_real_run_refuses_and_keeps_the_others() -> None:
    passed: list[dict[str, Any]] = []
    tiers = [{"format": "gguf", "variants": ["Q8_0"]}, {"format": "mlx", "variants": ["4bit"]}]
    assert _producible_tiers(tiers, build_fake_registry(), passed) == tiers[:1]
    assert [(p["field"], "mlx" in p["reason"]) for p in passed] == [("quantTiers[1]", True)]


def test_the_fake_quant_knows_the_gguf_types_the_real_llama_cpp_here_knows() -> None:
    pytest.importorskip("llama_cpp")
    from foundry.executors.quant_tiers import GGUF_TYPES
    from foundry.executors.real.quant import EXPORT_TYPES, supported_quant_types

    assert set(supported_quant_types()) | set(EXPORT_TYPES) == GGUF_TYPES
