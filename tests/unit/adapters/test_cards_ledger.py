"""The card says how each score was made, never sets two scores made differently side by side
(it says why), and states the license and where it came from."""

from __future__ import annotations

import copy
from typing import Any

from foundry.adapters.publishing.cards import headline, render_readme
from foundry.adapters.publishing.eval_ledger import incomparable, ledger_rows

LEDGER: dict[str, Any] = {
    "harness": "humaneval", "harnessVersion": "foundry-humaneval/1",
    "datasetHash": "sha256:" + "d" * 64, "problems": 5,
    "sampling": {"greedy": True, "samples": 1, "maxNewTokens": 256}, "seed": 0,
    "modelHash": "sha256:" + "a" * 64, "modelFormat": "safetensors", "device": "cpu",
    "wallSeconds": 12.5, "samplesHash": "sha256:" + "5" * 64, "ledgerKey": "sha256:" + "1" * 64}


def artifact(**extra: Any) -> dict[str, Any]:
    bench = {"name": "humaneval", "subset": "first 5", "metric": "pass@1", "score": 0.4,
             "baseScore": 0.2, "delta": 0.2, "ledger": copy.deepcopy(LEDGER)}
    return {"id": "art-1", "recipeName": "pruned", "license": "apache-2.0",
            "source": {"baseModel": "acme/base"},
            "results": {"benchmarks": [bench]}, **extra}


def test_the_card_shows_each_score_with_its_ledger() -> None:
    readme = render_readme(artifact())
    section = readme.split("## How these scores were made", 1)[1]
    assert "foundry-humaneval/1" in section and "sha256:dddddddddddd" in section
    assert "greedy, 1 sample(s), 256 new tokens" in section and "safetensors" in section
    assert "| humaneval (first 5) | pass@1 | 0.4 | 0.2 | 0.2 |" in readme
    assert "Not compared" not in readme
    assert headline(artifact()) == "humaneval: 0.4 vs 0.2 for the base model"


def test_a_base_score_made_under_another_ledger_is_shown_but_never_compared() -> None:
    a = artifact()
    a["results"]["benchmarks"][0]["baseLedgerKey"] = "sha256:" + "9" * 64
    readme = render_readme(a)
    assert "| humaneval (first 5) | pass@1 | 0.4 | 0.2 | not comparable |" in readme
    assert "under ledger sha256:999999999999" in readme and "no delta is given" in readme
    assert headline(a) != "humaneval: 0.4 vs 0.2 for the base model"
    assert ledger_rows(a)[0]["baseComparable"] is False


def test_scores_of_one_benchmark_under_different_ledgers_are_called_separate() -> None:
    a = artifact()
    other = copy.deepcopy(a["results"]["benchmarks"][0])
    other["ledger"]["ledgerKey"] = "sha256:" + "2" * 64
    a["results"]["benchmarks"].append(other)
    notes = incomparable(a)
    assert len(notes) == 1 and "different ledgers" in notes[0] and "not a trend" in notes[0]
    assert "different ledgers" in render_readme(a)


def test_a_prior_baseline_from_another_harness_is_not_compared() -> None:
    baseline = {"metric": "humaneval", "value": 0.3, "source": "imported alloy",
                "measurementMethod": "lm-eval-harness 0.4 (n=164)"}
    a = artifact(priorMetricBaselines=[baseline])
    notes = incomparable(a)
    assert len(notes) == 1
    assert "lm-eval-harness 0.4 (n=164)" in notes[0] and "imported alloy" in notes[0]
    same = artifact(priorMetricBaselines=[{**baseline, "ledgerKey": LEDGER["ledgerKey"]}])
    assert incomparable(same) == []


def test_a_score_without_a_ledger_says_so() -> None:
    a = artifact()
    del a["results"]["benchmarks"][0]["ledger"]
    section = render_readme(a).split("## How these scores were made", 1)[1]
    assert "| humaneval (first 5) | not recorded |" in section


def test_the_license_line_says_where_the_license_came_from() -> None:
    inherited = render_readme(artifact())
    assert "## License\n\napache-2.0, inherited from the source model `acme/base` " \
           "(licenseStrategy inherit_from_source" in inherited
    overridden = render_readme(artifact(licenseStrategy="override", license="mit",
                                        licenseReason="the base allows relicensing"))
    assert "mit, overriding the license of the source model `acme/base` (licenseStrategy " \
           "override): the base allows relicensing" in overridden
    assert "## License" not in render_readme({**artifact(), "license": None})
