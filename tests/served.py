"""A real `foundry serve` in a subprocess on a free loopback port, with tokens issued through
the store (as `foundry tokens create` would): what the tests/e2e/test_http_*.py suites and
benchmarks/bench_http.py talk to over real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(state: Path, **extra: str) -> dict[str, str]:
    """Fake executors and a private state dir; the server's workers inherit it all."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FOUNDRY_DATABASE_URL", "FOUNDRY_FAKE_SLEEP", "FOUNDRY_FAKE_FAIL_ON")}
    env.update(FOUNDRY_EXECUTORS="fake", FOUNDRY_STATE_DIR=str(state / "state"),
               FOUNDRY_FAKE_MODELS=str(state / "fake-models"),
               FOUNDRY_KEYS_DIR=str(state / "keys"), FOUNDRY_SIGNING="existing",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    env.update(extra)
    return env


@dataclass
class Served:
    """A running server: its URL, store, process and a token per scope."""

    url: str
    db: str
    proc: subprocess.Popen[str]
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    """scope -> the name (principal) of its token"""
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def call(self, command: str, params: Any = None, *, token: str | None = "admin",
             content: bytes | None = None, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        """POST a command with the token of scope `token` (None: no Authorization)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        if content is None:
            return self.client.post(f"{self.url}/v1/commands/{command}",
                                    json={} if params is None else params, headers=sent)
        return self.client.post(f"{self.url}/v1/commands/{command}", content=content,
                                headers=sent)

    def ok(self, command: str, params: Any = None, **kw: Any) -> dict[str, Any]:
        response = self.call(command, params, **kw)
        body: dict[str, Any] = response.json()
        assert response.status_code == 200 and body["success"], (response.status_code, body)
        return body

    def issue(self, name: str, scope: str) -> str:
        """A new token, written to the store by this (the test) process."""
        from foundry.adapters.store.config import parse_database_url
        from foundry.adapters.store.tokens import ApiTokens

        tokens = ApiTokens.open(parse_database_url(self.db))
        try:
            return str(tokens.issue(name, scope, issued_by="tests")["token"])
        finally:
            tokens.close()

    def revoke(self, ref: str) -> None:
        from foundry.adapters.store.config import parse_database_url
        from foundry.adapters.store.tokens import ApiTokens

        tokens = ApiTokens.open(parse_database_url(self.db))
        try:
            tokens.revoke(ref, by="tests")
        finally:
            tokens.close()


def wait_until_up(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"foundry serve exited {proc.returncode}: {out}\n{err}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"foundry serve did not answer at {url} within {timeout}s")


@contextmanager
def serve(db: str, workdir: Path, *args: str, env: dict[str, str] | None = None,
          scopes: tuple[str, ...] = ("read", "write", "run", "admin")) -> Iterator[Served]:
    """`foundry --db DB serve --port <free> ARGS` until the block ends; one token per scope
    in `scopes`, each named `<scope>-<random>`."""
    port = free_port()
    env = env or server_env(workdir)
    cmd = [sys.executable, "-m", "foundry.adapters.cli.main", "--db", db, "serve",
           "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    served = Served(url=f"http://127.0.0.1:{port}", db=db, proc=proc, env=env)
    try:
        wait_until_up(served.url, proc)
        for scope in scopes:
            served.names[scope] = f"{scope}-{uuid.uuid4().hex[:6]}"
            served.tokens[scope] = served.issue(served.names[scope], scope)
        yield served
    finally:
        served.client.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
