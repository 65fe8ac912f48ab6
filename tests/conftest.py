"""Shared fixtures: the same scenarios run on SQLite (a tmp file) and PostgreSQL (a schema).

PostgreSQL tests use one fresh schema per test on the server at 127.0.0.1:5432, so they need
no cleanup between each other and can never see each other's rows.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
import structlog

PG_SERVER = os.environ.get("FOUNDRY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"
# A sealed run is signed only when its test made a key (FOUNDRY_SIGNING=existing): the
# default, `auto`, creates one on first use, which would sign every run of every test and
# hide the unsigned paths. Tests of `auto` set it themselves; servers and workers inherit
# this. test_readme_path runs the README with FOUNDRY_* cleared, so on the default.
os.environ.setdefault("FOUNDRY_SIGNING", "existing")


@pytest.fixture(autouse=True)
def _read_roots(tmp_path_factory: pytest.TempPathFactory,
                monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build tiny models and corpora under pytest's temp dir and name them in recipes:
    that dir is a read root (executors/read_roots.py), as an operator lists theirs in
    FOUNDRY_MODEL_ROOTS. Workers started by a test inherit it."""
    monkeypatch.setenv("FOUNDRY_MODEL_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def pg_schema_url(schema: str) -> str:
    return f"{PG_SERVER}?schema={schema}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'foundry.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield pg_schema_url(schema)
    drop_schema(schema)


@pytest.fixture
def foundry(store_url: str) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        yield f


def as_node(store_url: str, foundry: Any, node_class: str, site: str | None = None) -> Any:
    """A second Foundry on the same store, configured as another node (what
    FOUNDRY_NODE_CLASS/FOUNDRY_NODE_SITE say to a process: read once, at open)."""
    import dataclasses

    from foundry.adapters.bootstrap import Foundry

    settings = dataclasses.replace(foundry.settings, node_class=node_class, node_site=site)
    return Foundry.open(store_url, settings=settings)


@pytest.fixture
def forge_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake executors, a fresh state dir and fake model dir; workers inherit all of it."""
    state = tmp_path / "state"
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "fake")
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(state))
    monkeypatch.setenv("FOUNDRY_FAKE_MODELS", str(tmp_path / "fake-models"))
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))  # no key: runs are unsigned
    monkeypatch.delenv("FOUNDRY_FAKE_SLEEP", raising=False)
    monkeypatch.delenv("FOUNDRY_FAKE_FAIL_ON", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    # Plain log lines: the default rich renderer prints every local of an injected stage
    # failure, which costs half a second per failed run (conftest resets this afterwards).
    structlog.configure(processors=[
        structlog.processors.add_log_level, structlog.processors.format_exc_info,
        structlog.processors.KeyValueRenderer(key_order=["event"]),
    ])
    return state


@pytest.fixture
def recipe_data() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


@pytest.fixture
def recipe(recipe_data: dict[str, Any]) -> dict[str, Any]:
    """The example recipe on the fake executors' deterministic source model (a module may
    override it with a recipe of its own)."""
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    return data


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], result
    return result


def run_events(foundry: Any, run_id: str) -> list[Any]:
    stored = foundry.runs.recorder.select_events(UUID(run_id))
    return [foundry.runs.mapper.to_domain_event(s) for s in stored]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of `check()`, polled until `timeout` seconds; else the test
    fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def count_stored_events(app: Any, kind: str) -> int:
    """Rows in an application's event table, counted in the database itself."""
    recorder = app.recorder
    with recorder.datastore.transaction(commit=False) as curs:
        if kind == "sqlite":
            curs.execute("SELECT COUNT(*) FROM stored_events")
            return int(curs.fetchone()[0])
        curs.execute(
            f'SELECT COUNT(*) AS n FROM "{recorder.datastore.schema}".{recorder.events_table_name}'
        )
        return int(curs.fetchone()["n"])


def count_events(foundry: Any) -> int:
    """Rows in the recipe event table."""
    return count_stored_events(foundry.recipes, foundry.config.kind)


def count_run_events(foundry: Any) -> int:
    """Rows in the run event table."""
    return count_stored_events(foundry.runs, foundry.config.kind)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A local Hub (tests/hubserver.py) as HF_ENDPOINT, HF_TOKEN a recognisable secret, and
    huggingface_hub's shared HTTP client given a short read timeout (its default has none)."""
    import httpx2
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils import _http

    from tests.hubserver import HUB_CLIENT_TIMEOUT, HUB_TOKEN, HubServer

    def short_timeout_client() -> Any:
        client = _http.default_client_factory()
        client.timeout = httpx2.Timeout(HUB_CLIENT_TIMEOUT)
        return client

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # adapters/hub.py's client timeout: short, so the timeout test is quick.
        monkeypatch.setenv("FOUNDRY_HUB_TIMEOUT", str(HUB_CLIENT_TIMEOUT))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # Read once at import: a value set by an earlier test or the shell would stick.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)  # nothing leaves the loopback
        previous = _http._GLOBAL_CLIENT_FACTORY
        set_client_factory(short_timeout_client)
        try:
            yield server
        finally:
            set_client_factory(previous)


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every (path, JSON value) at the leaves, so that a difference names its field; an empty
    object or list is a leaf itself."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    else:
        yield path, json.dumps(value, sort_keys=True)


def read(foundry: Any, collection: str, some_id: str) -> dict[str, Any]:
    """The document of `some_id` in `collection`, which must exist."""
    found = ok(foundry.execute("data/read", {"collection": collection, "id": some_id}))
    assert found["found"], found
    return dict(found["data"])
