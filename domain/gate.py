"""The baseline gate: do the measured benchmarks meet the recipe's own bar?

A recipe states its bar before the run: `acceptanceCriteria.benchmarks` (minimum scores) and
`priorMetricBaselines` (negative baselines the forged model must beat). A failed gate does not
stop sealing; it seals the artifact as not shippable, with every reason.
"""

from __future__ import annotations

from typing import Any

# For these metrics a smaller number is better; for every other metric, larger is better.
LOWER_IS_BETTER = ("perplexity", "loss", "error", "wer", "cer")


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in LOWER_IS_BETTER)


def evaluate_gate(
    recipe: dict[str, Any], benchmarks: list[dict[str, Any]]
) -> tuple[bool, list[str]]:
    """(passed, reasons). Reasons list each failed check; a pass lists what was checked."""
    scores = {b["name"]: b.get("score") for b in benchmarks}
    failures: list[str] = []
    checked: list[str] = []
    criteria = (recipe.get("acceptanceCriteria") or {}).get("benchmarks") or {}
    for name, rule in sorted(criteria.items()):
        floor = rule.get("min")
        if floor is None:
            continue
        score = scores.get(name)
        if score is None:
            failures.append(f"acceptanceCriteria.benchmarks.{name}: no result recorded")
        elif score < floor:
            failures.append(f"acceptanceCriteria.benchmarks.{name}: score {score} < min {floor}")
        else:
            checked.append(f"{name} {score} >= min {floor}")
    not_gating: list[str] = []
    for i, base in enumerate(recipe.get("priorMetricBaselines") or []):
        metric, value = base.get("metric"), base.get("value")
        if not isinstance(metric, str) or not isinstance(value, int | float):
            # A legacy record (only an imported file can hold one: a recipe write refuses an
            # incomplete gating baseline) documents history and has no comparable value. Said
            # in the reasons, never skipped in silence.
            label = base.get("id") or base.get("name") or f"#{i}"
            not_gating.append(f"priorMetricBaselines.{i} ({label}): legacy record, not gating")
            continue
        score = scores.get(metric)
        if score is None:
            failures.append(f"priorMetricBaselines.{metric}: no result recorded")
            continue
        better = score < value if lower_is_better(metric) else score > value
        relation = "<" if lower_is_better(metric) else ">"
        if better:
            checked.append(f"{metric} {score} {relation} baseline {value}")
        else:
            failures.append(f"priorMetricBaselines.{metric}: {score} does not beat baseline "
                            f"{value} ({'lower' if lower_is_better(metric) else 'higher'} "
                            "is better)")
    if failures:
        return False, failures + not_gating
    return True, (checked or ["no acceptance criteria or baselines stated"]) + not_gating
