"""Reading an artifact for the model cards, and the researcher's card (MODEL_METHODOLOGY.md).

Everything here is a pure function of the artifact dict: no clock, no randomness, and every
mapping whose keys become text is walked in sorted order, so the key order of the input never
shows in the output. A field that is absent (or empty) leaves its line or section out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from foundry.domain.gate import lower_is_better
from foundry.domain.values.artifact import ArtifactDocument

DASH = "—"  # an empty table cell: the field is absent from the artifact


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any) -> str:
    """A field value as text, exactly: integral floats without `.0`, others round-tripped."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, list | tuple):
        return ", ".join(str(as_map(v).get("name", fmt(v))) if isinstance(v, Mapping)
                         else fmt(v) for v in value)
    return str(value)


def cell(value: Any) -> str:
    """A table cell: the value, or a dash when it is absent; pipes and newlines escaped."""
    if value is None or value == "" or value == []:
        return DASH
    return " ".join(fmt(value).split("\n")).replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def section(heading: str, lines: list[str]) -> list[str]:
    """A heading, a blank line and its lines; nothing at all when there are no lines."""
    return [heading, "", *lines] if lines else []


def present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def title(artifact: ArtifactDocument) -> str | None:
    """recipeName; a legacy alloy's `name`; else the artifact id."""
    for key in ("recipeName", "name", "id"):
        if present(artifact.get(key)):
            return str(artifact[key])
    return None


def stage_rows(artifact: ArtifactDocument) -> list[dict[str, Any]]:
    """The stages as run (provenance.stages); for an artifact without them (an imported
    alloy), the stages of its recipe snapshot, in order."""
    run = [as_map(s) for s in as_list(as_map(artifact.get("provenance")).get("stages"))]
    if run:
        return [{**s, "config": as_map(s.get("config")), "runNotes": s.get("notes")}
                for s in run]
    return [{"index": i, "type": as_map(s).get("type"), "config": as_map(s)}
            for i, s in enumerate(as_list(artifact.get("stages")))]


def stage_notes(row: Mapping[str, Any]) -> list[str]:
    """The stage's authored `notes`, then any notes the run recorded for it."""
    notes = [row["config"].get("notes"), *as_list(row.get("runNotes"))]
    if isinstance(row.get("runNotes"), str):
        notes.append(row["runNotes"])
    return [str(n).strip() for n in notes if present(n) and str(n).strip()]


def many_cycles(rows: list[dict[str, Any]]) -> bool:
    return len({r.get("cycle") for r in rows}) > 1


def stage_label(row: Mapping[str, Any], cycles: bool) -> str:
    where = [f"cycle {row['cycle']}"] if cycles and row.get("cycle") is not None else []
    return " ".join([str(row.get("type") or DASH), *(f"({w})" for w in where)])


def benchmarks(artifact: ArtifactDocument) -> list[Mapping[str, Any]]:
    return [as_map(b) for b in as_list(as_map(artifact.get("results")).get("benchmarks"))]


def hardware_verified(artifact: ArtifactDocument) -> list[Mapping[str, Any]]:
    """Section 4 puts hardwareVerified at the top; legacy executed alloys keep it in results."""
    top = as_list(artifact.get("hardwareVerified"))
    legacy = as_list(as_map(artifact.get("results")).get("hardwareVerified"))
    return [as_map(h) for h in top or legacy]


def bench_label(b: Mapping[str, Any]) -> str:
    name = str(b.get("name") or DASH)
    return f"{name} ({b['subset']})" if present(b.get("subset")) else name


def delta(b: Mapping[str, Any]) -> float | None:
    """The recorded delta; else score minus baseScore when both were recorded."""
    if is_num(b.get("delta")):
        return float(b["delta"])
    if is_num(b.get("score")) and is_num(b.get("baseScore")):
        return round(float(b["score"]) - float(b["baseScore"]), 6)
    return None


def improvement(b: Mapping[str, Any]) -> float | None:
    """The delta signed so that larger is better (perplexity, loss, error: lower is better)."""
    d = delta(b)
    if d is None:
        return None
    return -d if lower_is_better(str(b.get("metric") or b.get("name") or "")) else d


def blockquote(text: str) -> list[str]:
    return [f"> {line}".rstrip() for line in text.splitlines()]


def bullets(pairs: list[tuple[str, Any]]) -> list[str]:
    return [f"- {k}: {fmt(v)}" for k, v in pairs if present(v)]


# --- MODEL_METHODOLOGY.md ------------------------------------------------------------------

RUN_FACTS = (("Artifact", "id"), ("Recipe", "recipeId"), ("Recipe version", "recipeVersion"),
             ("Hardware node", "hardwareNode"), ("Forged at", "forgedAt"),
             ("Duration (minutes)", "durationMinutes"), ("Cycles", "cycles"),
             ("Methodology paper", "methodologyPaperUrl"))
BASELINE_KEYS = ("metric", "value", "source", "measuredAt", "measurementMethod", "id", "name",
                 "outcome", "supersededBy")


def methodology(artifact: ArtifactDocument) -> str:
    name = title(artifact)
    sections = [
        [f"# {name}: methodology"] if name else [],
        [str(artifact["description"])] if present(artifact.get("description")) else [],
        _run_facts(artifact), _stages(artifact), _gate(artifact), _baselines(artifact),
        _benchmark_details(artifact), _corpus(artifact), _hashes(artifact), _attempts(artifact),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _run_facts(a: ArtifactDocument) -> list[str]:
    prov = as_map(a.get("provenance"))
    facts = [(label, a.get(key)) for label, key in RUN_FACTS]
    facts += [("Recipe revision", prov.get("recipeRevision")), ("Run", prov.get("runId")),
              ("Requested by", prov.get("requestedBy"))]
    lines = bullets(facts)
    return section("## Run", lines)


def _stages(a: ArtifactDocument) -> list[str]:
    rows = stage_rows(a)
    cycles, out = many_cycles(rows), []
    for n, row in enumerate(rows, 1):
        out += ["", f"### {n}. {stage_label(row, cycles)}"]
        config = row["config"]
        out += bullets([(f"`{k}`", config[k]) for k in sorted(config)
                        if k not in ("type", "notes")])
        out += bullets([("Seconds", row.get("seconds"))])
        metrics = as_map(row.get("metrics"))
        out += bullets([(f"measured `{k}`", metrics[k]) for k in sorted(metrics)])
        for note in stage_notes(row):
            out += ["", *blockquote(note)]
    return section("## Stages", out[1:])


def _gate(a: ArtifactDocument) -> list[str]:
    gate = as_map(as_map(a.get("provenance")).get("gate"))
    if not gate:
        return []
    passed = gate.get("passed")
    verdict = "Passed." if passed is True else "Failed." if passed is False else None
    reasons = [f"- {r}" for r in as_list(gate.get("reasons"))]
    return section("## Gate", [*([verdict, ""] if verdict else []), *reasons])


def _baselines(a: ArtifactDocument) -> list[str]:
    out: list[str] = []
    for base in (as_map(b) for b in as_list(a.get("priorMetricBaselines"))):
        keys = [k for k in BASELINE_KEYS if k in base]
        keys += sorted(k for k in base if k not in BASELINE_KEYS)
        out.append("- " + "; ".join(f"{k}: {fmt(base[k])}" for k in keys if present(base[k])))
    return section("## Prior metric baselines", out)


def _benchmark_details(a: ArtifactDocument) -> list[str]:
    out: list[str] = []
    for b in benchmarks(a):
        fields = sorted(k for k in b if k not in ("name", "subset") and present(b[k]))
        out += [f"- {bench_label(b)}", *(f"  - {k}: {fmt(b[k])}" for k in fields)]
    return section("## Benchmark results", out)


def _corpus(a: ArtifactDocument) -> list[str]:
    c = as_map(a.get("calibrationCorpus"))
    lines = bullets([("Name", c.get("name")), ("Content hash", c.get("contentHash")),
                     ("Size (bytes)", c.get("sizeBytes")), ("Source", c.get("sourceUrl"))])
    return section("## Calibration corpus", lines)


def _hashes(a: ArtifactDocument) -> list[str]:
    prov, integrity = as_map(a.get("provenance")), as_map(a.get("integrity"))
    lines = bullets([("alloyHash", a.get("alloyHash")), ("Recipe hash", prov.get("recipeHash")),
                     ("Source hash", as_map(prov.get("source")).get("sourceHash")),
                     ("Model hash", integrity.get("modelHash")),
                     ("Trust level", integrity.get("trustLevel"))])
    rows, cycles = stage_rows(a), many_cycles(stage_rows(a))
    hashed = [[stage_label(r, cycles), r.get("inputHash"), r.get("outputHash")]
              for r in rows if present(r.get("inputHash")) or present(r.get("outputHash"))]
    if hashed:
        lines += ["", *table(["Stage", "Input", "Output"], hashed)]
    return section("## Hashes", lines)


def _attempts(a: ArtifactDocument) -> list[str]:
    out: list[str] = []
    for att in (as_map(x) for x in as_list(as_map(a.get("provenance")).get("attempts"))):
        out += ["", f"### Attempt {fmt(att.get('attempt'))}"]
        out += bullets([("Started at", att.get("startedAt")), ("Worker", att.get("workerHost")),
                        ("Device", att.get("device"))])
        software = as_map(att.get("software"))
        out += [f"- software `{k}`: {fmt(software[k])}" for k in sorted(software)]
    return section("## Attempts", out[1:])
