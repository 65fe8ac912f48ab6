"""alloy/import: every file is tried and reported on its own.

A directory import used to stop at the first bad file without naming it, and the files after
it were never tried. Now each file gets one entry: `imported`, `migrated` (with its notes) or
`refused` (with the reason and its errorCode). A refused file writes nothing (each file is
validated whole before anything of it is stored); the others are imported regardless. If any
was refused the envelope is a failure (`success: false`, so the CLI exits non-zero) that still
carries the whole report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry.domain.errors import FoundryError, InvalidInputError

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices
    from foundry.domain import commands as c


class ImportRefusedError(InvalidInputError):
    """Some files were refused; `envelope_fields` is the per-file report the envelope keeps."""

    def __init__(self, report: list[dict[str, Any]]):
        refused = [r for r in report if r["status"] == "refused"]
        details = [{"field": f"paths: {r['file']}", "rule": r["error"]} for r in refused]
        super().__init__(
            details[0]["field"],
            f"{len(refused)} of {len(report)} files refused: "
            + "; ".join(f"{Path(r['file']).name}: {r['error']}" for r in refused),
            details=details)
        self.envelope_fields = {"imported": report, "count": len(report) - len(refused),
                                "refused": len(refused)}


def import_alloys(cmd: c.ImportAlloys, services: CommandServices, _call: Call) -> dict[str, Any]:
    from foundry.adapters.publishing.alloy_io import import_alloy

    report = [_one(services, path, import_alloy) for path in alloy_files(cmd.paths)]
    if any(r["status"] == "refused" for r in report):
        raise ImportRefusedError(report)
    return {"imported": report, "count": len(report), "refused": 0}


def _one(services: CommandServices, path: Path, import_alloy: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = import_alloy(services, path)
    except FoundryError as e:  # the file's own fault: say so and go on with the next
        return {"file": str(path), "status": "refused", "error": str(e),
                "errorCode": e.code, "migrations": []}
    return {**result, "status": "migrated" if result["migrations"] else "imported"}


def alloy_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        files += sorted(path.glob("*.alloy.json")) if path.is_dir() else [path]
    return files
