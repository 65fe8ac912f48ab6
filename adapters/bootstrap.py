"""Builds the object graph from configuration. The only module that reads configuration."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from eventsourcing.persistence import InfrastructureFactory

from adapters.app import RecipeBook
from adapters.config import StoreConfig, parse_database_url, resolve_database_url
from adapters.persistence import RECORDER_TOPICS
from projections.host import ProjectionHost
from projections.recipes.fold import TOPICS as RECIPE_TOPICS
from projections.recipes.view import RecipeViewPostgres, RecipeViewSQLite

RECIPE_VIEW_NAME = "recipeview"


class Foundry:
    """The running system for one store: applications, views and their hosts."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        with _ddl_guard(config):
            self.recipes = RecipeBook(env=self._env(""))
            self.recipe_view: Any = _build_view(config, RECIPE_VIEW_NAME)
        self.recipe_host = ProjectionHost(self.recipes, self.recipe_view, RECIPE_TOPICS)
        self._lock = threading.RLock()

    @classmethod
    def open(cls, database_url: str | None = None) -> Foundry:
        """Open the store named by `database_url`, FOUNDRY_DATABASE_URL, or the default."""
        return cls(parse_database_url(resolve_database_url(database_url)))

    def _env(self, purpose: str) -> dict[str, str]:
        return {
            **self.config.app_env(purpose),
            "APPLICATION_RECORDER_TOPIC": RECORDER_TOPICS[self.config.kind],
            "AGGREGATE_CACHE_MAXSIZE": "1000",
        }

    def execute(self, command: str, params: Any) -> dict[str, Any]:
        """Run one command through the dispatcher (see adapters.dispatcher)."""
        from adapters.dispatcher import dispatch

        with self._lock:
            return dispatch(self, command, params)

    def close(self) -> None:
        self.recipes.close()
        with contextlib.suppress(Exception):
            self.recipe_view.datastore.close()

    def __enter__(self) -> Foundry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build_view(config: StoreConfig, name: str) -> Any:
    env = config.app_env("views")
    factory = InfrastructureFactory.construct(env=_named_env(name, env))
    view_class = RecipeViewSQLite if config.kind == "sqlite" else RecipeViewPostgres
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

    conninfo = {
        "dbname": config.pg_dbname, "host": config.pg_host, "port": config.pg_port,
        "user": config.pg_user, "password": config.pg_password, "connect_timeout": 10,
    }
    with psycopg.connect(**conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("SELECT pg_advisory_lock(7361001)")
        try:
            if config.pg_schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{config.pg_schema}"')
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(7361001)")
