"""The README's "How these scores were made" and "License" sections.

Scores are shown with their ledger (harness, data hash, problems, sampling, seed, model,
device, wall time) and with every reason two of them are not set side by side
(eval_ledger.incomparable). The license line says where the license came from: inherited
from the source model (whose card or config publishing checks it against) or an override
with the recipe's reason. Pure functions of the artifact dict, deterministic like the cards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundry.adapters.publishing.cards_sections import (
    as_map,
    bench_label,
    benchmarks,
    fmt,
    present,
    section,
    table,
)
from foundry.adapters.publishing.eval_ledger import incomparable, short
from foundry.domain.values.artifact import ArtifactDocument

HEADER = ["Benchmark", "Harness", "Data", "Problems", "Sampling", "Seed", "Model", "Device",
          "Seconds"]


def sampling_text(sampling: Mapping[str, Any]) -> str:
    """`greedy, 1 sample, 256 new tokens` or `temperature 0.8, top-p 0.95, 10 samples, ...`."""
    parts = ["greedy" if sampling.get("greedy") else
             f"temperature {fmt(sampling.get('temperature'))}, top-p {fmt(sampling.get('topP'))}"
             if "temperature" in sampling else "teacher-forced"
             if sampling.get("teacherForced") else None]
    if present(sampling.get("samples")):
        parts.append(f"{fmt(sampling['samples'])} sample(s)")
    if present(sampling.get("maxNewTokens")):
        parts.append(f"{fmt(sampling['maxNewTokens'])} new tokens")
    if present(sampling.get("seqLen")):
        parts.append(f"{fmt(sampling['seqLen'])}-token windows")
    return ", ".join(p for p in parts if p)


def _row(b: Mapping[str, Any]) -> list[Any]:
    led = as_map(b.get("ledger"))
    if not led:
        return [bench_label(b), "not recorded", None, None, None, None, None, None, None]
    model = f"{led.get('modelFormat')} {short(led.get('modelHash'))}"
    return [bench_label(b), led.get("harnessVersion"), short(led.get("datasetHash")),
            led.get("problems"), sampling_text(as_map(led.get("sampling"))), led.get("seed"),
            model, led.get("device"), led.get("wallSeconds")]


def how_made(artifact: ArtifactDocument) -> list[str]:
    benches = benchmarks(artifact)
    if not benches:
        return []
    lines = table(HEADER, [_row(b) for b in benches])
    lines += ["", "Score and base-model score of one row come from the same harness, data, "
              "prompt template, sampling and seed; `foundry eval show` prints every field."]
    notes = incomparable(artifact)
    if notes:
        lines += ["", "Not compared:", *(f"- {n}" for n in notes)]
    return section("## How these scores were made", lines)


def license_lines(artifact: ArtifactDocument) -> list[str]:
    license_ = artifact.get("license")
    if not present(license_):
        return []
    base = as_map(artifact.get("source")).get("baseModel")
    source = f"the source model `{base}`" if present(base) else "the source model"
    if artifact.get("licenseStrategy") == "override":
        reason = artifact.get("licenseReason")
        line = (f"{fmt(license_)}, overriding the license of {source} (licenseStrategy "
                f"override)" + (f": {fmt(reason)}" if present(reason) else ""))
    else:
        line = (f"{fmt(license_)}, inherited from {source} (licenseStrategy "
                "inherit_from_source: publishing checks it against the license its model card "
                "or config.json states)")
    return section("## License", [line])
