"""The `foundry` command line, run as real subprocesses against a temporary SQLite store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.bootstrap import os_user
from tests.conftest import EXAMPLE, ROOT

pytestmark = pytest.mark.slow

R = "forge_recipes"
ENV = {k: v for k, v in os.environ.items() if k != "FOUNDRY_DATABASE_URL"}
ENV["PYTHONPATH"] = str(ROOT)
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def foundry_cmd(*args: str, db: str | None = None, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "foundry.adapters.cli.main",
            *(["--db", db] if db else []), *args]


def cli(*args: str, db: str | None = None, timeout: float = 90,
        python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        foundry_cmd(*args, db=db, python_flags=python_flags), cwd=ROOT, env=ENV,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def envelope(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout must be one JSON envelope, whatever happened."""
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not a JSON envelope: {proc.stdout!r} (stderr {proc.stderr!r})")
    assert isinstance(result.get("success"), bool), result
    return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'foundry.db'}"


def test_a_recipe_can_be_created_edited_listed_forked_shown_and_rebuilt_from_the_cli(
    db, tmp_path
):
    out = ok(cli("recipe", "create", str(EXAMPLE), db=db))
    match = re.fullmatch(rf"created ({UUID_RE}) \(revision 1\)\n", out)
    assert match, out
    rid = match[1]

    out = ok(cli("recipe", "edit", rid, "--set", "cycles=2", "--reason", "r", db=db))
    assert out.splitlines() == ["revision 1 -> 2", "  cycles: 1 -> 2"], out

    lines = ok(cli("recipe", "list", db=db)).splitlines()
    assert len(lines) == 2 and lines[-1] == "1 shown", lines
    assert lines[0].split()[:5] == [rid, "tiny-llama-code-forged", "v0.1.0", "rev", "2"], lines

    lines = ok(cli("recipe", "history", rid, db=db)).splitlines()
    # Without --author the CLI records the OS user as who made each change.
    user = re.escape(os_user() or "-")
    assert re.fullmatch(rf"rev 1  \S+  Created  by {user}", lines[0]), lines
    assert re.fullmatch(rf"rev 2  \S+  Edited  by {user}  \(r\)", lines[1]), lines
    assert lines[2:] == ["    cycles: 1 -> 2"], lines

    out = ok(cli("recipe", "fork", rid, "--set", 'name="x"', db=db))
    match = re.fullmatch(rf"forked {rid} -> ({UUID_RE})\n", out)
    assert match, out
    child = match[1]

    shown = json.loads(ok(cli("recipe", "show", child, db=db)))
    assert shown["name"] == "x" and shown["parentRecipeId"] == rid and shown["id"] == child
    assert shown["cycles"] == 2  # the fork copies the parent as edited
    assert shown["revision"] == 1

    read = envelope(proc := cli("exec", "data/read", json.dumps({"collection": R, "id": rid}),
                                db=db))
    ok(proc)
    assert read["success"] and read["found"] and read["data"]["revision"] == 2
    assert read["data"]["cycles"] == 2 and read["data"]["name"] == "tiny-llama-code-forged"

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"collection": R, "filter": {"parentRecipeId": rid}}))
    listed = envelope(proc := cli("exec", "data/list", f"@{params}", db=db))
    ok(proc)
    assert [i["id"] for i in listed["items"]] == [child], listed

    before = ok(cli("recipe", "list", "--order-by", "name", db=db))
    rebuilt = envelope(proc := cli("projections", "rebuild", db=db))
    ok(proc)
    assert rebuilt["success"] is True
    # create + edit + fork: every recipe event replayed once
    assert rebuilt["views"]["forge_recipes"]["events"] == 3, rebuilt
    assert ok(cli("recipe", "list", "--order-by", "name", db=db)) == before


def test_exec_with_a_missing_params_file_is_an_envelope_not_a_crash(db, tmp_path):
    proc = cli("exec", "data/list", f"@{tmp_path / 'nope.json'}", db=db)
    result = envelope(proc)
    assert proc.returncode != 0 and result["success"] is False
    assert result["errorCode"] == "invalid_input" and "nope.json" in result["error"]
    assert "Traceback" not in proc.stderr


def test_malformed_json_params_give_a_failure_envelope_naming_line_and_column(db):
    proc = cli("exec", "data/read", '{"collection": "forge_recipes",\n  "id": }', db=db)
    result = envelope(proc)
    assert proc.returncode != 0
    assert result["success"] is False and result["errorCode"] == "invalid_input"
    assert "line 2 column 9" in result["error"], result
    assert "Traceback" not in proc.stderr


def test_an_unknown_command_fails_with_an_envelope_listing_the_known_ones(db):
    proc = cli("exec", "data/teleport", "{}", db=db)
    result = envelope(proc)
    assert proc.returncode != 0
    assert result["success"] is False and result["errorCode"] == "invalid_input"
    assert "unknown command 'data/teleport'" in result["error"] and "data/list" in result["error"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["recipe", "create", "{missing}"], "cannot read"),
        (["recipe", "create", "{malformed}"], "line 1 column"),
        (["recipe", "list", "--filter", "{not json"], "line 1 column"),
        (["recipe", "edit", "00000000-0000-0000-0000-000000000001", "--data", "[1,"],
         "line 1 column"),
    ],
)
def test_a_bad_file_or_json_argument_is_reported_without_a_traceback(db, tmp_path, args,
                                                                     expected):
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{oops")
    args = [a.replace("{missing}", str(tmp_path / "missing.json"))
            .replace("{malformed}", str(malformed)) for a in args]
    proc = cli(*args, db=db)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert expected in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)


HELP_SCRIPT = r"""
import argparse, contextlib, io, json, sys
from foundry.adapters.cli.main import build_parser, main

def walk(parser, prefix, out):
    out.append(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                walk(sub, [*prefix, name], out)

paths = []
walk(build_parser(), [], paths)
results = []
for path in paths:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*path, "--help"])
            code = "returned without exiting"
        except SystemExit as e:
            code = e.code or 0
    results.append({"path": path, "code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def test_help_of_every_verb_exits_zero():
    # One subprocess walks the parser and asks every command path for --help (a process per
    # verb would take seconds each on a loaded machine).
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    names = {" ".join(r["path"]) for r in results}
    assert {"exec", "recipe create", "recipe show", "recipe edit", "recipe list",
            "recipe history", "recipe fork", "recipe delete", "projections rebuild"} <= names
    for r in results:
        assert r["code"] == 0, r
        first = r["out"].splitlines()[0] if r["out"] else ""
        assert first.startswith(" ".join(["usage: foundry", *r["path"]])), r


@pytest.mark.parametrize("args", [["exec", "data/list", '{"collection": "forge_recipes"}'],
                                  ["recipe", "list"]])
def test_a_database_that_is_down_gives_store_unavailable_and_no_traceback(args):
    proc = cli(*args, db="postgresql://postgres@127.0.0.1:1/nope", timeout=60)
    assert proc.returncode != 0
    result = envelope(proc)
    assert result["success"] is False and result["errorCode"] == "store_unavailable", result
    assert result["error"]
    assert "Traceback" not in proc.stderr, proc.stderr


def test_data_commands_do_not_import_torch_or_transformers(db):
    proc = cli("exec", "data/list", '{"collection": "forge_recipes"}', db=db,
               python_flags=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert envelope(proc)["success"] is True
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines() if line.startswith("import time:")
    }
    parsed = {"foundry.adapters.commands.bus", "foundry.adapters.commands.data", "eventsourcing"}
    assert parsed <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in {"torch", "transformers"})
    assert heavy == [], f"data/* imported {heavy[:10]}"
