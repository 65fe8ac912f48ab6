"""Builds the object graph from configuration. The only module that reads configuration."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import InfrastructureFactory

from foundry.adapters.store.recipe_book import RecipeBook
from foundry.adapters.store.config import StoreConfig, parse_database_url, resolve_database_url
from foundry.adapters.store.persistence import RECORDER_TOPICS
from foundry.adapters.store.forge_runs import ForgeRuns
from foundry.projections.artifacts.view import TOPICS as ARTIFACT_TOPICS
from foundry.projections.artifacts.view import ArtifactViewPostgres, ArtifactViewSQLite
from foundry.projections.host import ProjectionHost
from foundry.projections.recipes.fold import TOPICS as RECIPE_TOPICS
from foundry.projections.recipes.view import RecipeViewPostgres, RecipeViewSQLite

if TYPE_CHECKING:
    from foundry.adapters.store.blobs import BlobStore
    from foundry.adapters.runs.launch import RunDispatcher
    from foundry.executors.registry import ExecutorRegistry

RECIPE_VIEW_NAME = "recipeview"
ARTIFACT_VIEW_NAME = "artifactview"
ENV_STATE_DIR = "FOUNDRY_STATE_DIR"
ENV_EXECUTORS = "FOUNDRY_EXECUTORS"


class Foundry:
    """The running system for one store: applications, views and their hosts."""

    def __init__(self, config: StoreConfig, *, state_dir: Path | None = None,
                 create_tables: bool = True) -> None:
        import structlog

        if not structlog.is_configured():
            # A library caller who set nothing gets warnings on stderr, not info on stdout.
            from foundry.adapters.log_setup import configure_logging

            configure_logging("WARNING")
        self.config = config
        # On PostgreSQL, a Ray task on a worker node opens the store with create_tables=False:
        # the tables are made once, by `foundry db init`, never by racing workers.
        self._ddl = {} if create_tables or config.kind == "sqlite" else {"CREATE_TABLE": "no"}
        with _ddl_guard(config) if not self._ddl else contextlib.nullcontext():
            self.recipes = RecipeBook(env=self._env(""))
            self.runs = ForgeRuns(env=self._env("runs"))
            recipe_view = RecipeViewSQLite if config.kind == "sqlite" else RecipeViewPostgres
            artifact_view = (ArtifactViewSQLite if config.kind == "sqlite"
                             else ArtifactViewPostgres)
            self.recipe_view: Any = _build_view(config, RECIPE_VIEW_NAME, recipe_view, self._ddl)
            self.artifact_view: Any = _build_view(config, ARTIFACT_VIEW_NAME, artifact_view,
                                                  self._ddl)
        if self._ddl:
            self._check_tables()
        self.recipe_host = ProjectionHost(self.recipes, self.recipe_view, RECIPE_TOPICS)
        self.artifact_host = ProjectionHost(self.runs, self.artifact_view, ARTIFACT_TOPICS)
        self.state_dir = state_dir or Path(
            os.environ.get(ENV_STATE_DIR) or config.default_state_dir())
        self._registry: ExecutorRegistry | None = None
        self._run_dispatcher: RunDispatcher | None = None
        self._lock = threading.RLock()
        # The CLI sets this to draw progress; every stage event of a run is passed to it.
        self.progress_listener: Any = lambda _event: None

    def _check_tables(self) -> None:
        """Without DDL rights of its own, a missing table is an error that says what to do."""
        import psycopg

        recorders: list[Any] = [self.recipes.recorder, self.runs.recorder]
        names = [r.events_table_name for r in recorders] + [
            self.recipe_view.tracking_table_name, self.artifact_view.tracking_table_name]
        schema = self.config.pg_schema or "public"
        with psycopg.connect(**self.config.pg_conninfo(), autocommit=True) as conn:
            missing = [n for n in names if conn.execute(
                "SELECT to_regclass(%s)", (f'"{schema}"."{n}"',)).fetchone() == (None,)]
        if missing:
            from foundry.adapters.errors import StoreUnavailableError

            raise StoreUnavailableError(self.config.display_url, RuntimeError(
                f"tables {', '.join(missing)} do not exist: run `foundry db init` once "
                "against this store before starting workers"))

    @property
    def blobs(self) -> BlobStore:
        from foundry.adapters.store.blobs import BlobStore

        return BlobStore(self.state_dir / "blobs")

    @property
    def registry(self) -> ExecutorRegistry:
        """The stage executors, chosen by FOUNDRY_EXECUTORS: `real` (default) or `fake`
        (the deterministic set the orchestration tests use). Loaded on first use, so data/*
        commands never import torch."""
        if self._registry is None:
            kind = os.environ.get(ENV_EXECUTORS, "real")
            if kind == "fake":
                from foundry.executors.fake import build_fake_registry

                sleep = float(os.environ.get("FOUNDRY_FAKE_SLEEP", "0"))
                self._registry = build_fake_registry(
                    sleep_seconds=sleep, fail_on=os.environ.get("FOUNDRY_FAKE_FAIL_ON"))
            else:
                from foundry.executors.real import build_registry

                self._registry = build_registry()
        return self._registry

    @property
    def run_dispatcher(self) -> RunDispatcher:
        """How forge/run gets a run executed: FOUNDRY_DISPATCHER=in-process (default) or
        ray (adapters/run_dispatch.py)."""
        if self._run_dispatcher is None:
            from foundry.adapters.runs.launch import dispatcher_from_env

            self._run_dispatcher = dispatcher_from_env()
        return self._run_dispatcher

    def use_registry(self, registry: ExecutorRegistry) -> None:
        self._registry = registry

    @classmethod
    def open(cls, database_url: str | None = None, *, state_dir: Path | None = None,
             create_tables: bool = True) -> Foundry:
        """Open the store named by `database_url`, FOUNDRY_DATABASE_URL, or the default.
        Blobs and heartbeats live in `state_dir`, else FOUNDRY_STATE_DIR, else next to the
        store (SQLite) or in the user data dir (PostgreSQL). With `create_tables=False` no
        table is created (PostgreSQL): a missing one is an error naming `foundry db init`."""
        return cls(parse_database_url(resolve_database_url(database_url)), state_dir=state_dir,
                   create_tables=create_tables)

    def app_env(self, purpose: str) -> dict[str, str]:
        """The eventsourcing environment of an application ('' recipes, 'runs' runs)."""
        return self._env(purpose)

    def _env(self, purpose: str) -> dict[str, str]:
        return {
            **self.config.app_env(purpose),
            **self._ddl,
            "APPLICATION_RECORDER_TOPIC": RECORDER_TOPICS[self.config.kind],
            "AGGREGATE_CACHE_MAXSIZE": "1000",
        }

    def execute(self, command: str, params: Any) -> dict[str, Any]:
        """Run one command through the dispatcher (see foundry.adapters.commands.bus)."""
        import foundry.adapters.commands.forge
        import foundry.adapters.commands.lineage  # noqa: F401 - registers lineage and audit commands
        from foundry.adapters.commands.bus import dispatch

        with self._lock:
            return dispatch(self, command, params)

    def hosts(self) -> dict[str, ProjectionHost]:
        return {"forge_recipes": self.recipe_host, "forge_artifacts": self.artifact_host}

    def close(self) -> None:
        self.recipes.close()
        self.runs.close()
        for view in (self.recipe_view, self.artifact_view):
            with contextlib.suppress(Exception):
                view.datastore.close()

    def __enter__(self) -> Foundry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build_view(config: StoreConfig, name: str, view_class: type[Any],
                extra_env: dict[str, str]) -> Any:
    env = {**config.app_env("views"), **extra_env}
    factory = InfrastructureFactory.construct(env=_named_env(name, env))
    return factory.tracking_recorder(view_class)


def _named_env(name: str, env: dict[str, str]) -> Any:
    from eventsourcing.utils import Environment

    return Environment(name=name, env=env)


@contextlib.contextmanager
def _ddl_guard(config: StoreConfig) -> Iterator[None]:
    """Serialise table creation across processes.

    The library creates tables when an application starts; on PostgreSQL two processes doing
    so at once fail with "tuple concurrently updated". An advisory lock held while the
    applications are built makes concurrent start-up safe. SQLite's file lock suffices there;
    the file's directory must exist first.
    """
    if config.kind == "sqlite":
        assert config.sqlite_path is not None
        config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        yield
        return
    import psycopg

    with psycopg.connect(**config.pg_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(7361001)")
        try:
            if config.pg_schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{config.pg_schema}"')
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(7361001)")
