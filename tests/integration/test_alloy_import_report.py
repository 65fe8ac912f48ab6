"""Issue #16 item 2: a directory import tries every file and reports each one.

Before, `import-alloy DIR` stopped at the first bad file without naming it and the files after
it were never tried. Real stores (SQLite and PostgreSQL), the CLI as a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, count_events, ok

FIXTURES = ROOT / "tests" / "fixtures" / "alloys"
R = "forge_recipes"


def a_directory(tmp_path: Path) -> Path:
    """Sorted: an executed alloy, a bad one, a legacy one needing migration, a broken one."""
    folder = tmp_path / "alloys"
    folder.mkdir()
    shutil.copy(FIXTURES / "executed-with-results.alloy.json", folder / "a-executed.alloy.json")
    bad = json.loads((FIXTURES / "legacy-deliver.alloy.json").read_text())
    bad["stages"][0] = {"type": "prune", "strategy": "magnitude", "level": 1.5}
    (folder / "b-bad-level.alloy.json").write_text(json.dumps(bad))
    shutil.copy(FIXTURES / "legacy-deliver.alloy.json", folder / "c-legacy.alloy.json")
    (folder / "d-broken.alloy.json").write_text('{"name": ')
    return folder


def test_every_file_is_tried_and_reported_and_a_refusal_fails_the_envelope(foundry, tmp_path):
    folder = a_directory(tmp_path)
    result = foundry.execute("alloy/import", {"paths": [str(folder)]})
    assert result["success"] is False and result["errorCode"] == "invalid_input", result
    report = {Path(r["file"]).name: r for r in result["imported"]}
    assert list(report) == ["a-executed.alloy.json", "b-bad-level.alloy.json",
                            "c-legacy.alloy.json", "d-broken.alloy.json"]
    assert report["a-executed.alloy.json"]["status"] == "imported"
    assert report["a-executed.alloy.json"]["runId"] is not None
    assert report["c-legacy.alloy.json"]["status"] == "migrated"
    assert any("deliver" in n for n in report["c-legacy.alloy.json"]["migrations"])
    for name, words in (("b-bad-level.alloy.json", ("stages.0", "0.9")),
                        ("d-broken.alloy.json", ("malformed JSON",))):
        entry = report[name]
        assert entry["status"] == "refused" and entry["errorCode"] == "invalid_input", entry
        for word in words:
            assert word in entry["error"], entry
        assert name in result["error"]  # the envelope's sentence names every refused file
    assert (result["count"], result["refused"]) == (2, 2)
    assert [e["field"] for e in result["errors"]] == [
        f"paths: {folder / 'b-bad-level.alloy.json'}", f"paths: {folder / 'd-broken.alloy.json'}"]
    # Nothing partial from a refused file: exactly the two good recipes are there.
    listed = ok(foundry.execute("data/list", {"collection": R}))
    assert sorted(i["id"] for i in listed["items"]) == sorted(
        report[n]["recipeId"] for n in ("a-executed.alloy.json", "c-legacy.alloy.json"))


def test_an_import_with_nothing_refused_succeeds(foundry, tmp_path):
    result = ok(foundry.execute("alloy/import", {"paths": [
        str(FIXTURES / "executed-with-results.alloy.json")]}))
    assert [r["status"] for r in result["imported"]] == ["imported"]
    assert (result["count"], result["refused"]) == (1, 0)
    before = count_events(foundry)
    assert ok(foundry.execute("alloy/import", {"paths": [
        str(FIXTURES / "executed-with-results.alloy.json")]}))["imported"] == result["imported"]
    assert count_events(foundry) == before


def test_the_cli_exits_non_zero_naming_each_refused_file(tmp_path):
    folder = a_directory(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_DATABASE_URL"}
    env.update(PYTHONPATH=str(ROOT), FOUNDRY_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run(
        [sys.executable, "-m", "foundry.adapters.cli.main", "--db",
         f"sqlite:///{tmp_path / 'cli.db'}", "import-alloy", str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    statuses = {Path(r["file"]).name: r["status"] for r in result["imported"]}
    assert statuses == {"a-executed.alloy.json": "imported", "b-bad-level.alloy.json": "refused",
                        "c-legacy.alloy.json": "migrated", "d-broken.alloy.json": "refused"}
