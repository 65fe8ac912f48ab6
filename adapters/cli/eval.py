"""`foundry eval show ARTIFACT_OR_RUN`: how each benchmark score of an artifact was made.

A rich table (one row per score: harness, data hash, problems, sampling, seed, model,
device, wall time, samples hash) and the reasons any two scores are not comparable; `--json`
prints the eval/show envelope instead. Failures are the envelope, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from foundry.adapters.cli.common import print_json

WIDE = 400
COLUMNS = ("Benchmark", "Metric", "Score", "Base", "Harness", "Data", "Problems", "Sampling",
           "Seed", "Model", "Device", "Seconds", "Samples")


def add_eval_commands(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluation results and how they were made")
    es = p.add_subparsers(metavar="ACTION")
    s = es.add_parser("show", help="the evaluation ledger of an artifact (artifact or run id)")
    s.add_argument("id", help="artifact id or run id")
    s.add_argument("--json", action="store_true", help="print the result envelope as JSON")
    s.set_defaults(run=_show)


def _row(b: Mapping[str, Any]) -> list[str]:
    from foundry.adapters.publishing.cards_ledger import sampling_text
    from foundry.adapters.publishing.eval_ledger import short

    led: Mapping[str, Any] = b.get("ledger") or {}
    name = f"{b['name']} ({b['subset']})" if b.get("subset") else str(b.get("name"))
    base = "" if b.get("baseScore") is None else str(b["baseScore"]) + (
        "" if b.get("baseComparable", True) else " (not comparable)")
    if not led:
        return [name, str(b.get("metric") or ""), str(b.get("score")), base, "not recorded",
                *[""] * (len(COLUMNS) - 5)]
    return [name, str(b.get("metric") or ""), str(b.get("score")), base,
            str(led.get("harnessVersion")), short(led.get("datasetHash")),
            str(led.get("problems")), sampling_text(led.get("sampling") or {}),
            str(led.get("seed")), f"{led.get('modelFormat')} {short(led.get('modelHash'))}",
            str(led.get("device")), str(led.get("wallSeconds")), short(led.get("samplesHash"))]


def _show(foundry: Any, args: argparse.Namespace) -> int:
    result: dict[str, Any] = foundry.execute("eval/show", {"id": args.id})
    if args.json or not result.get("success"):
        print_json(result)
        return 0 if result.get("success") else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"artifact {result['artifactId']} (run {result['runId']})")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for bench in result["benchmarks"]:
        table.add_row(*_row(bench))
    # Off a terminal (a pipe, a log) the table is as wide as it needs, so hashes and harness
    # names stay on one line where grep finds them.
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else WIDE)
    console.print(table)
    if not result["benchmarks"]:
        console.print("no benchmark scores recorded")
    for note in result["notComparable"]:
        console.print(f"not compared: {note}", markup=False, highlight=False)
    return 0
