"""Builds the object graph from configuration. The only module that reads configuration.

`Foundry.open` reads the environment once (`Settings.from_env`), builds the applications,
views and hosts, and freezes them into one `Services` value; the command registry is
assembled here from the handler modules' `COMMANDS` tables. `Foundry.execute` hands both to
the bus. Nothing here serialises commands: two calls run at the same time, and the store
keeps them apart (expected revisions, optimistic saves, run leases).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eventsourcing.persistence import InfrastructureFactory

from foundry.adapters.commands import (
    artifacts,
    audit_checkpoints,
    audit_events,
    audit_inflight,
    audit_recipes,
    data,
    evaluation,
    forge,
    lineage,
)
from foundry.adapters.commands.ports import Call, ProgressListener, ignore_progress, isolated
from foundry.adapters.commands.registry import CommandRegistry
from foundry.adapters.settings import ENV_EXECUTORS, ENV_STATE_DIR, Settings
from foundry.adapters.store.config import StoreConfig, parse_database_url, resolve_database_url
from foundry.adapters.store.forge_runs import ForgeRuns
from foundry.adapters.store.persistence import RECORDER_TOPICS
from foundry.adapters.store.recipe_book import RecipeBook
from foundry.projections.artifacts.view import TOPICS as ARTIFACT_TOPICS
from foundry.projections.artifacts.view import ArtifactViewPostgres, ArtifactViewSQLite
from foundry.projections.host import ProjectionHost
from foundry.projections.recipes.fold import TOPICS as RECIPE_TOPICS
from foundry.projections.recipes.relocate import move_recipe_view
from foundry.projections.recipes.view import RecipeViewPostgres, RecipeViewSQLite

if TYPE_CHECKING:
    from foundry.adapters.runs.launch import RunDispatcher
    from foundry.adapters.store.blobs import BlobStore
    from foundry.executors.registry import ExecutorRegistry

__all__ = ["ENV_EXECUTORS", "ENV_STATE_DIR", "Foundry", "Services", "build_commands"]

RECIPE_VIEW_NAME = "recipeview"
ARTIFACT_VIEW_NAME = "artifactview"
T = TypeVar("T")


def build_commands() -> CommandRegistry:
    """Every command, from the handler modules' tables: one place lists them all."""
    return CommandRegistry([*data.COMMANDS, *forge.COMMANDS, *lineage.COMMANDS,
                            *artifacts.COMMANDS, *audit_events.COMMANDS,
                            *audit_inflight.COMMANDS, *audit_recipes.COMMANDS,
                            *audit_checkpoints.COMMANDS, *evaluation.COMMANDS])


class Lazy(Generic[T]):
    """A value built on first use, once, even when two threads ask at the same moment (the
    real executors import torch: data/* commands must not pay for that)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build, self._lock = build, threading.Lock()
        self._value: T | None = None

    @classmethod
    def of(cls, value: T) -> Lazy[T]:
        lazy = cls(lambda: value)
        lazy._value = value
        return lazy

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value


@dataclass(frozen=True)
class Services:
    """The system for one store, built once: what every command handler may use
    (foundry.adapters.commands.ports.CommandServices)."""

    config: StoreConfig
    settings: Settings
    recipes: RecipeBook
    runs: ForgeRuns
    recipe_view: Any
    artifact_view: Any
    recipe_host: ProjectionHost
    artifact_host: ProjectionHost
    state_dir: Path
    blobs: BlobStore
    executors: Lazy[ExecutorRegistry]
    launchers: Lazy[RunDispatcher]
    commands: CommandRegistry

    @property
    def registry(self) -> ExecutorRegistry:
        """The stage executors: settings.executors `real` (default) or `fake`."""
        return self.executors.get()

    @property
    def launcher(self) -> RunDispatcher:
        """How forge/run gets a run executed: settings.dispatcher."""
        return self.launchers.get()


def _executors(settings: Settings) -> ExecutorRegistry:
    if settings.executors == "fake":
        from foundry.executors.fake import build_fake_registry

        return build_fake_registry(sleep_seconds=settings.fake_sleep_seconds,
                                   fail_on=settings.fake_fail_on)
    from foundry.executors.real import build_registry

    return build_registry()


def _launcher(settings: Settings) -> RunDispatcher:
    from foundry.adapters.runs.launch import dispatcher_named

    return dispatcher_named(settings.dispatcher)


class Foundry:
    """The running system for one store: `execute(command, params)` and the parts behind it."""

    def __init__(self, config: StoreConfig, *, state_dir: Path | None = None,
                 create_tables: bool = True, settings: Settings | None = None) -> None:
        import structlog

        if not structlog.is_configured():
            # A library caller who set nothing gets warnings on stderr, not info on stdout.
            from foundry.adapters.log_setup import configure_logging

            configure_logging("WARNING")
        self.config = config
        settings = settings or Settings.from_env()
        # On PostgreSQL, a Ray task on a worker node opens the store with create_tables=False:
        # the tables are made once, by `foundry db init`, never by racing workers.
        self._ddl = {} if create_tables or config.kind == "sqlite" else {"CREATE_TABLE": "no"}
        with _ddl_guard(config) if not self._ddl else contextlib.nullcontext():
            recipes = RecipeBook(env=self._env(""))
            runs = ForgeRuns(env=self._env("runs"))
            recipe_view_class = RecipeViewSQLite if config.kind == "sqlite" else RecipeViewPostgres
            artifact_view_class = (ArtifactViewSQLite if config.kind == "sqlite"
                                   else ArtifactViewPostgres)
            # In the events' database (SQLite: their file): an edit writes its view row in
            # the transaction of its events (foundry.projections.inline).
            recipe_view = _build_view(config, RECIPE_VIEW_NAME, recipe_view_class, self._ddl,
                                      purpose="")
            artifact_view = _build_view(config, ARTIFACT_VIEW_NAME, artifact_view_class,
                                        self._ddl)
        if self._ddl:
            _check_tables(config, [recipes.recorder, runs.recorder],
                          [recipe_view, artifact_view])
        from foundry.adapters.store.blobs import BlobStore

        state = state_dir or settings.state_dir or config.default_state_dir()
        from foundry.executors.read_roots import grant_root

        grant_root(state)  # runs may read what Foundry itself put there (rehearsal twins)
        self.services = Services(
            config=config, settings=settings, recipes=recipes, runs=runs,
            recipe_view=recipe_view, artifact_view=artifact_view,
            recipe_host=ProjectionHost(recipes, recipe_view, RECIPE_TOPICS),
            artifact_host=ProjectionHost(runs, artifact_view, ARTIFACT_TOPICS),
            state_dir=state, blobs=BlobStore(state / "blobs"),
            executors=Lazy(lambda: _executors(settings)),
            launchers=Lazy(lambda: _launcher(settings)), commands=build_commands(),
        )
        # One commit per recipe edit: events, command record and view row together.
        self.services.recipe_host.write_inline()
        if config.kind == "sqlite":
            move_recipe_view(config.sqlite_file("views"), self.services.recipe_host)

    # --- the parts, for callers that work below the commands (CLI maintenance, tests) ------

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def recipes(self) -> RecipeBook:
        return self.services.recipes

    @property
    def runs(self) -> ForgeRuns:
        return self.services.runs

    @property
    def recipe_view(self) -> Any:
        return self.services.recipe_view

    @property
    def artifact_view(self) -> Any:
        return self.services.artifact_view

    @property
    def recipe_host(self) -> ProjectionHost:
        return self.services.recipe_host

    @property
    def artifact_host(self) -> ProjectionHost:
        return self.services.artifact_host

    @property
    def state_dir(self) -> Path:
        return self.services.state_dir

    @property
    def blobs(self) -> BlobStore:
        return self.services.blobs

    @property
    def registry(self) -> ExecutorRegistry:
        return self.services.registry

    @property
    def launcher(self) -> RunDispatcher:
        return self.services.launcher

    run_dispatcher = launcher

    def use_registry(self, registry: ExecutorRegistry) -> None:
        """Execute later runs with `registry` (tests inject fakes this way). The services stay
        frozen: the whole value is replaced, so a call in flight keeps the one it started with."""
        self.services = dataclasses.replace(self.services, executors=Lazy.of(registry))

    def use_launcher(self, launcher: RunDispatcher) -> None:
        """Get later runs executed by `launcher` (see use_registry)."""
        self.services = dataclasses.replace(self.services, launchers=Lazy.of(launcher))

    @classmethod
    def open(cls, database_url: str | None = None, *, state_dir: Path | None = None,
             create_tables: bool = True, settings: Settings | None = None) -> Foundry:
        """Open the store named by `database_url`, FOUNDRY_DATABASE_URL, or the default.
        Blobs and heartbeats live in `state_dir`, else FOUNDRY_STATE_DIR, else next to the
        store (SQLite) or in the user data dir (PostgreSQL). With `create_tables=False` no
        table is created (PostgreSQL): a missing one is an error naming `foundry db init`.
        `settings` default to the environment's, read now and never again."""
        return cls(parse_database_url(resolve_database_url(database_url)), state_dir=state_dir,
                   create_tables=create_tables, settings=settings)

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

    def execute(self, command: str, params: Any, *, progress: ProgressListener | None = None,
                principal: str = "") -> dict[str, Any]:
        """Run one command (foundry.adapters.commands.bus); always an envelope, never raises.
        `progress` gets the stage events of a run this call executes or follows; `principal`
        is who asks (recorded as a run's requestedBy when the params name nobody)."""
        from foundry.adapters.commands.bus import dispatch

        call = Call(progress=isolated(progress or ignore_progress), principal=principal)
        services = self.services  # one consistent value for the whole call
        return dispatch(services.commands, services, command, params, call)

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


def os_user() -> str:
    """The OS user running this process: the CLI's principal."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container
        return ""


def _check_tables(config: StoreConfig, recorders: list[Any], views: list[Any]) -> None:
    """Without DDL rights of its own, a missing table is an error that says what to do."""
    import psycopg

    names = [r.events_table_name for r in recorders] + [v.tracking_table_name for v in views]
    schema = config.pg_schema or "public"
    with psycopg.connect(**config.pg_conninfo(), autocommit=True) as conn:
        missing = [n for n in names if conn.execute(
            "SELECT to_regclass(%s)", (f'"{schema}"."{n}"',)).fetchone() == (None,)]
    if missing:
        from foundry.adapters.errors import StoreUnavailableError

        raise StoreUnavailableError(config.display_url, RuntimeError(
            f"tables {', '.join(missing)} do not exist: run `foundry db init` once "
            "against this store before starting workers"))


def _build_view(config: StoreConfig, name: str, view_class: type[Any],
                extra_env: dict[str, str], purpose: str = "views") -> Any:
    env = {**config.app_env(purpose), **extra_env}
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
