"""Issue #16 item 9: `foundry audit in-flight` lists what to settle before publishing only
from recipes: runs not completed, imported alloys without a recipe authored here or without
runs. Real stores (SQLite and PostgreSQL), fake executors, the CLI as a real subprocess."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from foundry.executors.fake import build_fake_registry
from tests.conftest import ROOT, ok

FIXTURES = ROOT / "tests" / "fixtures" / "alloys"
R = "forge_recipes"


def test_a_clean_store_is_clear_and_each_loose_end_is_listed(forge_env, foundry, recipe_data):
    assert ok(foundry.execute("audit/in-flight", {}))["clear"] is True
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    foundry.use_registry(build_fake_registry(fail_on="eval"))
    failed = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert failed["status"] == "failed"
    foundry.use_registry(build_fake_registry())
    done = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert done["status"] == "completed"  # not listed
    imported = ok(foundry.execute("alloy/import", {"paths": [
        str(FIXTURES / "executed-with-results.alloy.json"),
        str(FIXTURES / "legacy-deliver.alloy.json")]}))["imported"]
    with_run = next(r for r in imported if r["runId"])
    without = next(r for r in imported if not r["runId"])

    audit = ok(foundry.execute("audit/in-flight", {}))
    assert audit["clear"] is False
    [pending] = audit["runsNotCompleted"]
    assert pending["runId"] == failed["runId"] and pending["status"] == "failed"
    assert pending["node"] == "cpu@local" and pending["attempts"] == 1
    assert pending["owner"]["pid"] == os.getpid() and pending["ageSeconds"] >= 0
    assert pending["lastEvent"]["type"] == "Failed"
    [orphan] = audit["importedWithoutRecipe"]
    assert orphan["runId"] == with_run["runId"] and orphan["recipeId"] == with_run["recipeId"]
    assert [r["recipeId"] for r in audit["importedWithoutRuns"]] == [without["recipeId"]]
    assert audit["importedWithoutRuns"][0]["sourceFile"] == "legacy-deliver.alloy.json"


def test_the_cli_prints_markdown_and_exits_1_while_something_is_unsettled(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_DATABASE_URL"}
    env.update(PYTHONPATH=str(ROOT), FOUNDRY_STATE_DIR=str(tmp_path / "state"))
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "foundry.adapters.cli.main", "--db", db,
                               *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    clear = cli("audit", "in-flight")
    assert clear.returncode == 0 and "Nothing to settle" in clear.stdout, clear.stderr
    assert cli("import-alloy", str(FIXTURES / "legacy-deliver.alloy.json")).returncode == 0
    md = cli("audit", "in-flight")
    assert md.returncode == 1 and "## Imported recipes never forged" in md.stdout
    assert "legacy-deliver.alloy.json" in md.stdout and "Traceback" not in md.stderr
    as_json: dict[str, Any] = json.loads(cli("audit", "in-flight", "--json").stdout)
    assert len(as_json["importedWithoutRuns"]) == 1
    assert Path(as_json["importedWithoutRuns"][0]["sourceFile"]).name == (
        "legacy-deliver.alloy.json")
