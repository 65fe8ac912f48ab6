"""Where the store lives: one database URL, turned into the eventsourcing environment.

`sqlite:///path/foundry.db` (the embedded default) or `postgresql://user:pw@host:port/db`.
SQLite tables are not namespaced by the library, so each application gets its own file next to
the one named: `foundry.db` (recipes and the recipe view), `foundry.runs.db` (runs),
`foundry.views.db` (the artifact view).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import platformdirs

from foundry.domain.errors import InvalidInputError

ENV_DATABASE_URL = "FOUNDRY_DATABASE_URL"


@dataclass(frozen=True)
class StoreConfig:
    """A parsed database URL."""

    kind: Literal["sqlite", "postgres"]
    url: str
    sqlite_path: Path | None = None
    pg_dbname: str = ""
    pg_host: str = ""
    pg_port: int = 5432
    pg_user: str = ""
    pg_password: str = ""
    pg_schema: str = ""

    @property
    def display_url(self) -> str:
        """The URL with `***` for its password, safe for logs, errors and status output."""
        if self.kind == "sqlite":
            return self.url
        schema = f"?schema={self.pg_schema}" if self.pg_schema else ""
        secret = ":***" if self.pg_password else ""
        return (f"postgresql://{self.pg_user}{secret}@{self.pg_host}:{self.pg_port}/"
                f"{self.pg_dbname}{schema}")

    @property
    def url_without_password(self) -> str:
        """The URL to hand to another node: no password (its PGPASSWORD supplies one)."""
        if self.kind == "sqlite":
            return self.url
        schema = f"?schema={self.pg_schema}" if self.pg_schema else ""
        return (
            f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_dbname}{schema}"
        )

    def scrub(self, text: str) -> str:
        """`text` without this store's password (a driver may quote its connection string)."""
        return scrub_password(text, self.pg_password)

    def pg_conninfo(self) -> dict[str, Any]:
        """psycopg connection arguments for a connection of our own (locks, leases)."""
        return {
            "dbname": self.pg_dbname, "host": self.pg_host, "port": self.pg_port,
            "user": self.pg_user, "password": self.pg_password or None, "connect_timeout": 10,
            # A node that vanishes must not hold its locks for hours: the server drops the
            # session (and its advisory locks) once keepalives go unanswered.
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        }

    def sqlite_file(self, purpose: str) -> Path:
        """The SQLite file of one application: '' (recipes), 'runs' or 'views'."""
        assert self.sqlite_path is not None
        if not purpose:
            return self.sqlite_path
        return self.sqlite_path.with_name(f"{self.sqlite_path.stem}.{purpose}.db")

    def default_state_dir(self) -> Path:
        """Blobs, heartbeats and scratch: next to a SQLite store, else in the user data dir."""
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            return self.sqlite_path.with_name(f"{self.sqlite_path.stem}.state")
        base = Path(platformdirs.user_data_dir("foundry", appauthor=False))
        schema = self.pg_schema or "public"
        return base / f"pg-{self.pg_host}-{self.pg_port}-{self.pg_dbname}-{schema}"

    def app_env(self, purpose: str = "") -> dict[str, str]:
        """Environment for an eventsourcing Application or tracking recorder."""
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_file(purpose)),
                # Several processes share the file (CLI, workers): wait for the lock.
                "SQLITE_LOCK_TIMEOUT": "30",
            }
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.pg_dbname,
            "POSTGRES_HOST": self.pg_host,
            "POSTGRES_PORT": str(self.pg_port),
            "POSTGRES_USER": self.pg_user,
            "POSTGRES_PASSWORD": self.pg_password,
            # A CLI process needs few connections; the library's default (5 + 10) per
            # application quickly exhausts max_connections when many processes run.
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            **({"POSTGRES_SCHEMA": self.pg_schema} if self.pg_schema else {}),
        }


def redact_url(url: str) -> str:
    """`url` with `***` for the password of its user-info part, if it has one; safe to print
    even when the URL does not parse."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
    if password is None:
        return _USERINFO_PASSWORD.sub(r"\1***@", url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# A `user:password@` in anything that looks like a URL: the fallback when it does not parse.
_USERINFO_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@\s]*@")


def scrub_password(text: str, password: str) -> str:
    """`text` with every occurrence of `password` (plain or URL-encoded) replaced by `***`."""
    if not password:
        return text
    for form in {password, quote(password, safe="")}:
        text = text.replace(form, "***")
    return text


def scrub_url_secret(text: str, url: str | None) -> str:
    """`text` without the password of `url` (when `url` has one)."""
    try:
        password = unquote(urlsplit(url).password or "") if url else ""
    except ValueError:
        password = ""
    return scrub_password(text, password)


def default_database_url() -> str:
    data_dir = Path(platformdirs.user_data_dir("foundry", appauthor=False))
    return f"sqlite:///{data_dir / 'foundry.db'}"


def resolve_database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_DATABASE_URL) or default_database_url()


def parse_database_url(url: str) -> StoreConfig:
    """Parse a database URL; a bad one raises InvalidInputError naming the rule."""
    if url.startswith("sqlite:///"):
        path = Path(unquote(url[len("sqlite:///") - 1 :])).expanduser()
        if str(path) in ("/", ""):
            raise InvalidInputError("db", "sqlite URL needs a file path: sqlite:///path/foundry.db")
        return StoreConfig(kind="sqlite", url=url, sqlite_path=path)
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        dbname = parts.path.lstrip("/")
        if not dbname:
            raise InvalidInputError("db", "postgresql URL needs a database name: .../dbname")
        return StoreConfig(
            kind="postgres",
            url=url,
            pg_dbname=dbname,
            pg_host=parts.hostname or "127.0.0.1",
            pg_port=parts.port or 5432,
            pg_user=unquote(parts.username or "postgres"),
            # No password in the URL: libpq's PGPASSWORD, so that a URL handed to another
            # node (the Ray dispatcher does that) need not carry the secret.
            pg_password=unquote(parts.password or "") or os.environ.get("PGPASSWORD", ""),
            pg_schema=_schema_param(parts.query),
        )
    raise InvalidInputError(
        "db", "must start with sqlite:/// or postgresql:// (e.g. sqlite:///./foundry.db)"
    )


def _schema_param(query: str) -> str:
    """`?schema=NAME` puts every table in one PostgreSQL schema (tests use one per test)."""
    schema = parse_qs(query).get("schema", [""])[0]
    if schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise InvalidInputError("db", "schema must be lowercase letters, digits and _")
    return schema
