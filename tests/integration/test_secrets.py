"""No secret in output: a database password never reaches an envelope, a log line, `--help` or
status output; a hub token echoed back in every field of every hub response never reaches an
event, a view, a log or an envelope; a detached worker never has the database URL on its
command line (issues #10 and #17)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import PG_SERVER, ROOT, drop_schema, ok, run_events, wait_for
from tests.hubserver import HUB_TOKEN
from tests.integration.test_publish import (
    COMMIT,
    CREATE,
    REPO,
    event_payloads,
    forged,
    names,
    publish,
    stored_text,
)

PASSWORD = "s3cretpw"


def with_password(url: str, password: str = PASSWORD) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def foundry_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("FOUNDRY_DATABASE_URL", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "foundry.adapters.cli.main", *args],
                          capture_output=True, text=True, env=full_env, timeout=120, check=False)


# --- the database password -------------------------------------------------------------------

BAD_URL = f"postgresql://nobody:{PASSWORD}@127.0.0.1:5432/postgres"


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["env", "--db"])
@pytest.mark.parametrize("command", [["recipe", "list"], ["exec", "data/list", "{}"],
                                     ["db", "init"]])
def test_a_failed_connection_shows_no_password_in_any_envelope_or_log_line(
        how: str, command: list[str]) -> None:
    if how == "env":
        result = foundry_cli("--log-level", "DEBUG", *command,
                             env={"FOUNDRY_DATABASE_URL": BAD_URL})
    else:
        result = foundry_cli("--log-level", "DEBUG", "--db", BAD_URL, *command)
    assert result.returncode != 0
    envelope = json.loads(result.stdout)
    assert envelope["success"] is False and envelope["errorCode"] == "store_unavailable"
    assert "postgresql://nobody:***@127.0.0.1:5432/postgres" in envelope["error"]
    assert "role \"nobody\" does not exist" in envelope["error"]  # the cause is kept
    assert PASSWORD not in result.stdout and PASSWORD not in result.stderr


def test_help_shows_no_password() -> None:
    result = foundry_cli("--help", env={"FOUNDRY_DATABASE_URL": BAD_URL})
    assert result.returncode == 0 and "--db" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.postgres
def test_status_output_of_a_store_with_a_password_masks_it() -> None:
    """The test server trusts local users, so a URL with a password connects: `db init` then
    prints the store it set up, masked."""
    schema = f"s_{uuid.uuid4().hex[:16]}"
    url = with_password(f"{PG_SERVER}?schema={schema}")
    try:
        result = foundry_cli("--log-level", "DEBUG", "--db", url, "db", "init")
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["success"] is True and ":***@" in out["store"]
        assert PASSWORD not in result.stdout + result.stderr
    finally:
        drop_schema(schema)


def test_display_and_redacted_urls_mask_the_password() -> None:
    from foundry.adapters.store.config import parse_database_url, redact_url

    config = parse_database_url(BAD_URL)
    assert config.display_url == "postgresql://nobody:***@127.0.0.1:5432/postgres"
    assert config.scrub(f"dsn password={PASSWORD} x") == "dsn password=*** x"
    assert redact_url(BAD_URL) == "postgresql://nobody:***@127.0.0.1:5432/postgres"
    assert redact_url("postgresql://u:p%40ss@h:99999/db") == "postgresql://u:***@h:99999/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("sqlite:///tmp/foundry.db") == "sqlite:///tmp/foundry.db"


# --- a detached worker's command line ------------------------------------------------------------

@pytest.fixture
def pg_url_with_password() -> Iterator[str]:
    schema = f"w_{uuid.uuid4().hex[:16]}"
    yield with_password(f"{PG_SERVER}?schema={schema}")
    drop_schema(schema)


@pytest.mark.postgres
def test_a_detached_worker_gets_the_database_url_outside_its_command_line(
        pg_url_with_password: str, forge_env: Path, recipe_data: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from foundry.adapters.bootstrap import Foundry

    monkeypatch.setenv("FOUNDRY_FAKE_SLEEP", "0.5")
    recipe_data["source"]["baseModel"] = "fake://tiny"
    with Foundry.open(pg_url_with_password) as foundry:
        recipe_id = ok(foundry.execute("data/create", {"collection": "forge_recipes",
                                                       "data": recipe_data}))["id"]
        started = ok(foundry.execute("forge/run", {"recipeId": recipe_id, "wait": False}))
        pid = started["workerPid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"foundry.adapters.cli.worker" in cmdline  # it is the worker, still running
        assert not any(PASSWORD.encode() in arg for arg in cmdline), cmdline
        assert not any(b"postgresql://" in arg for arg in cmdline), cmdline
        # ...and yet it found the store: the run completes.
        wait_for(lambda: ok(foundry.execute("forge/status", {"runId": started["runId"]}))
                 ["status"] == "completed", 120, "the detached run to complete")


# --- the hub token ---------------------------------------------------------------------------

# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


def test_a_hub_echoing_the_token_in_every_response_field_leaks_it_nowhere(
        hub: Any, foundry: Any, recipe_data: dict[str, Any], tmp_path: Path, store_url: str,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    recipe_data["source"]["baseModel"] = "fake://tiny"
    hub.echo = HUB_TOKEN  # X-Request-Id, X-Error-Message, X-Error-Code, error text, repo URL
    secret = HUB_TOKEN.encode()
    run = forged(foundry, recipe_data, publishTarget=f"file://{tmp_path / 'out'}")
    published = publish(foundry, run["artifactId"], f"hf://{REPO}")
    failures = []
    # (A 401 on create for a repo that exists is followed by a check that finds it: another.)
    for prefix, status, repo in [(CREATE, 401, "org/other"), (CREATE, 500, REPO),
                                 (COMMIT, 404, REPO), (COMMIT, 409, REPO)]:
        hub.fail_next(prefix, status, message="refused")
        failures.append(publish(foundry, run["artifactId"], f"hf://{repo}"))
    assert hub.injected and len(hub.injected) == 4

    # The hub did send the token back in each answer, and the request id came through.
    assert published["success"], published
    for failed in failures:
        assert failed["success"] is False and failed["errorCode"] == "publish_failed", failed
        assert "request id req-***" in failed["error"], failed
    envelopes = json.dumps([published, *failures])
    assert HUB_TOKEN not in envelopes
    assert names(run_events(foundry, run["runId"]))[-4:] == ["PublishFailed"] * 4
    assert secret not in event_payloads(foundry, run["runId"])
    views = [ok(foundry.execute("data/list", {"collection": c, "limit": 100}))
             for c in ("forge_artifacts", "forge_recipes")]
    run_status = ok(foundry.execute("forge/status", {"runId": run["runId"]}))
    assert HUB_TOKEN not in json.dumps([views, run_status])
    for path in tmp_path.rglob("*"):  # SQLite files (+ WAL), state dir, file:// output
        if path.is_file():
            assert secret not in path.read_bytes(), path
    if store_url.startswith("postgresql"):
        assert secret not in stored_text(store_url)
    captured = capsys.readouterr()
    assert "command_refused" in captured.out + captured.err  # the log lines were captured
    assert HUB_TOKEN not in captured.out + captured.err
    # Every stdlib logger but the HTTP transport's own DEBUG trace (httpcore2 prints raw
    # response headers; foundry never enables it: configure_logging leaves stdlib logging at
    # its WARNING default).
    ours = [r for r in caplog.records if not r.name.startswith(("httpcore", "httpx"))]
    assert all(HUB_TOKEN not in r.getMessage() for r in ours)
