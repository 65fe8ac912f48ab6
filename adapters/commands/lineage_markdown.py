"""Renders a lineage report (the JSON of lineage/report) as Markdown for people."""

from __future__ import annotations

import json
from typing import Any


def render_markdown(r: dict[str, Any]) -> str:
    rec = r["recipe"]
    out = [f"# Lineage of {r['subject']['kind']} {r['subject']['id']}", "",
           f"## Recipe {rec['name']} (`{rec['id']}`)", "",
           f"- current version {rec['currentVersion']}, revision {rec['currentRevision']}",
           f"- pinned versions: {', '.join(rec['pinnedVersions']) or 'none'}"]
    if r["parents"]:
        chain = " <- ".join(f"missing (`{p['id']}`: {p['problem']})" if p.get("missing")
                            else f"{p['name']} {p['version']} (`{p['id']}`)" for p in r["parents"])
        out.append(f"- forked from: {chain}")
    out += ["", "## Edits that led here", "", "| rev | when | event | by | reason | changed |",
            "|---|---|---|---|---|---|"]
    for e in r["edits"]:
        fields = ", ".join(c["field"] for c in e.get("changes", [])) if e["event"] == "Edited" \
            else ""
        out.append(f"| {e['revision']} | {e['at']} | {e['event']} | {e['author'] or '-'} | "
                   f"{e['reason'] or ''} | {fields} |")
    for run in r["runs"]:
        out += _run(run)
    return "\n".join(out) + "\n"


def _run(run: dict[str, Any]) -> list[str]:
    out = ["", f"## Run `{run['runId']}`: {run['status']}", "",
           f"- recipe version {run['recipeVersion']} (revision {run['recipeRevision']}, "
           f"{run['recipeHash']})",
           f"- hardware node {run['hardwareNode']}; requested {run['requestedAt']} by "
           f"{run['requestedBy'] or '-'}",
           f"- artifact `{run['artifactId']}`" + (f", alloyHash `{run['alloyHash']}`"
                                                  if run["alloyHash"] else "")]
    for a in run["attempts"]:
        soft = ", ".join(f"{k} {v}" for k, v in sorted(a["software"].items()))
        out.append(f"- attempt {a['attempt']} on {a['workerHost']} (pid {a['pid']}, "
                   f"{a['device']}) at {a['startedAt']}: {soft}")
    if run["source"]:
        out.append(f"- source {run['source']['baseModel']} -> {run['source']['sourceHash']}")
    if run["gate"]:
        verdict = "passed" if run["gate"]["passed"] else "FAILED"
        out.append(f"- gate {verdict}: {'; '.join(run['gate']['reasons'])}")
    if run["failure"]:
        out.append(f"- failure: {run['failure']['type']}: {run['failure']['message']}")
    out += ["", "| cycle | stage | type | status | started | completed | s | input -> output "
            "| metrics |", "|---|---|---|---|---|---|---|---|---|"]
    for s in run["stages"]:
        metrics = json.dumps({k: v for k, v in (s.get("metrics") or {}).items()
                              if isinstance(v, int | float | str)}, sort_keys=True)
        out.append(
            f"| {s['cycle']} | {s['index']} | {s['type']} | {s['status']}{_reused(s)} | "
            f"{s['startedAt']} | "
            f"{s.get('completedAt') or ''} | {s.get('seconds') or ''} | "
            f"{_short(s.get('inputHash'))} -> {_short(s.get('outputHash'))}{_files(s)} | "
            f"{metrics} |")
    return out


def _reused(stage: dict[str, Any]) -> str:
    """Where a stage reused by fingerprint took its outputs from (StageReused)."""
    origin = stage.get("reusedFrom")
    if not origin:
        return ""
    return (f" (reused from run `{origin['runId']}` cycle {origin['cycle']} stage "
            f"{origin['index']})")


def _files(stage: dict[str, Any]) -> str:
    """The files a stage produced besides its model (a quant stage's GGUF tiers)."""
    files = stage.get("outputFiles") or []
    return "".join(f"<br>+ {f['path']} {_short(f['sha256'])}" for f in files)


def _short(h: str | None) -> str:
    return "" if not h else h.removeprefix("sha256:")[:12]
