"""Reading the evaluation ledger of an artifact: how each score was made, and which scores may
be set side by side.

A score's `ledger.ledgerKey` (written by the eval stage, executors/real/eval_ledger.py) hashes
everything that decides the number except the model: harness and version, data file hash,
problems, prompt template, sampling, seed. Two scores are comparable only when their keys are
equal. A benchmark entry's baseScore is made under the entry's own key unless the entry says
otherwise (`baseLedgerKey`, e.g. a baseline imported from elsewhere); a prior metric baseline
is compared only when it carries the same `ledgerKey`. Pure functions of the artifact dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundry.domain.values.artifact import ArtifactDocument

LEDGER_COLUMNS = ("harnessVersion", "datasetHash", "problems", "sampling", "seed",
                  "modelFormat", "modelHash", "device", "wallSeconds", "samplesHash")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def bench_entries(artifact: ArtifactDocument) -> list[Mapping[str, Any]]:
    return [_map(b) for b in _list(_map(artifact.get("results")).get("benchmarks"))]


def key_of(entry: Mapping[str, Any]) -> str | None:
    key = _map(entry.get("ledger")).get("ledgerKey")
    return str(key) if key else None


def short(value: Any, width: int = 12) -> str:
    """A hash as `sha256:` + its first `width` hex digits (the full one is in eval show)."""
    text = str(value)
    head, sep, tail = text.partition(":")
    return f"{head}:{tail[:width]}" if sep and len(tail) > width else text


def base_comparable(entry: Mapping[str, Any]) -> bool:
    """Whether the entry's baseScore was made the way its score was."""
    base_key = entry.get("baseLedgerKey")
    return base_key is None or base_key == key_of(entry)


def _label(entry: Mapping[str, Any]) -> str:
    name = str(entry.get("name") or "?")
    return f"{name} ({entry['subset']})" if entry.get("subset") else name


def incomparable(artifact: ArtifactDocument) -> list[str]:
    """Why some scores of this artifact are not set side by side: one line each."""
    notes: list[str] = []
    entries = bench_entries(artifact)
    for entry in entries:
        if entry.get("baseScore") is not None and not base_comparable(entry):
            notes.append(f"{_label(entry)}: the base model's score {entry['baseScore']} was made "
                         f"under ledger {short(entry.get('baseLedgerKey'))}, this score under "
                         f"{short(key_of(entry))}: no delta is given")
    by_name: dict[str, set[str | None]] = {}
    for entry in entries:
        by_name.setdefault(str(entry.get("name")), set()).add(key_of(entry))
    for name, keys in sorted(by_name.items()):
        if len(keys) > 1:
            shown = ", ".join(sorted(short(k) if k else "not recorded" for k in keys))
            notes.append(f"{name}: its scores here were made under different ledgers "
                         f"({shown}); they are separate measurements, not a trend")
    keys_by_name = {str(e.get("name")): key_of(e) for e in entries}
    for baseline in (_map(b) for b in _list(artifact.get("priorMetricBaselines"))):
        metric = str(baseline.get("metric") or "")
        if metric not in keys_by_name:
            continue
        if baseline.get("ledgerKey") and baseline.get("ledgerKey") == keys_by_name[metric]:
            continue
        how = baseline.get("measurementMethod") or "a method it does not record"
        notes.append(f"{metric}: the prior baseline {baseline.get('value')} (from "
                     f"{baseline.get('source') or 'an unnamed source'}) was measured by {how}, "
                     f"not under this artifact's ledger {short(keys_by_name[metric])}: "
                     "it is not compared with this score")
    return notes


def ledger_rows(artifact: ArtifactDocument) -> list[dict[str, Any]]:
    """One row per benchmark entry: its scores and its ledger ({} where none was recorded)."""
    return [{"name": e.get("name"), "subset": e.get("subset"), "metric": e.get("metric"),
             "score": e.get("score"), "baseScore": e.get("baseScore"),
             "baseComparable": base_comparable(e), "samplesPath": e.get("samplesPath"),
             "resultHash": e.get("resultHash"), "ledger": dict(_map(e.get("ledger")))}
            for e in bench_entries(artifact)]
