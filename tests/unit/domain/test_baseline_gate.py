"""Issue #16 item 5: a gate that cannot be dodged by leaving fields out of a baseline.

`{"metric": "perplexity"}` used to validate and then be skipped by the gate in silence. A
baseline that starts to look like a gating one now needs all five fields; a legacy record
(named by id or name, no value) stays valid and the gate says it does not gate.
"""

from __future__ import annotations

from typing import Any

import pytest

from foundry.domain.errors import InvalidInputError
from foundry.domain.gate import evaluate_gate
from foundry.domain.validation import validate_model
from foundry.domain.values.recipe import PriorBaseline

STRICT = {"metric": "perplexity", "value": 12.5, "source": "run 1",
          "measuredAt": "2026-01-01T00:00:00Z", "measurementMethod": "wikitext-2, 512 tokens"}


@pytest.mark.parametrize("left_out", ["value", "source", "measuredAt", "measurementMethod"])
def test_a_gating_baseline_missing_a_field_is_refused_naming_it(left_out):
    partial = {k: v for k, v in STRICT.items() if k != left_out}
    with pytest.raises(InvalidInputError) as raised:
        validate_model(PriorBaseline, partial)
    assert left_out in str(raised.value)


def test_only_a_metric_name_is_refused_naming_every_missing_field():
    with pytest.raises(InvalidInputError) as raised:
        validate_model(PriorBaseline, {"metric": "perplexity"})
    for name in ("value", "source", "measuredAt", "measurementMethod"):
        assert name in str(raised.value)


@pytest.mark.parametrize("baseline", [
    {**{k: v for k, v in STRICT.items() if k != "metric"}, "name": "no metric"},
    {"name": "a value with an object metric", "metric": {"name": "he"}, "value": 3},
    {"metric": "perplexity", "value": 12.5, "source": "", "measuredAt": "x",
     "measurementMethod": "y"},
])
def test_half_strict_shapes_are_refused(baseline):
    with pytest.raises(InvalidInputError):
        validate_model(PriorBaseline, baseline)


@pytest.mark.parametrize("legacy", [
    {"name": "negative result: prune at 50%", "outcome": "negative_baseline"},
    {"id": "v1", "metric": {"name": "humaneval", "score": 58.2}, "outcome": "superseded"},
])
def test_a_legacy_record_stays_valid_and_never_gates(legacy):
    parsed = validate_model(PriorBaseline, legacy)
    assert parsed.gating is False
    assert validate_model(PriorBaseline, STRICT).gating is True


def test_the_gate_names_each_legacy_record_as_not_gating():
    recipe: dict[str, Any] = {"priorMetricBaselines": [
        STRICT, {"id": "v1", "metric": {"name": "he"}}, {"name": "negative at 50%"}]}
    passed, reasons = evaluate_gate(recipe, [{"name": "perplexity", "score": 10.0}])
    assert passed
    assert reasons == ["perplexity 10.0 < baseline 12.5",
                       "priorMetricBaselines.1 (v1): legacy record, not gating",
                       "priorMetricBaselines.2 (negative at 50%): legacy record, not gating"]
    failed, why = evaluate_gate(recipe, [{"name": "perplexity", "score": 13.0}])
    assert not failed and why[0].startswith("priorMetricBaselines.perplexity")
    assert why[1:] == reasons[1:]
