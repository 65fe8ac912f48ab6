"""A run lease: at most one attempt of a run executes at any moment, across processes and nodes.

Stage events are exactly once per (cycle, stage) by the aggregate's own rules; the lease keeps
two attempts from doing the same work at once (a Ray retry starting while a stale worker is
still alive, a dispatcher restart re-submitting a run whose old task has not died yet, two
`forge/resume` calls).

- PostgreSQL: a session-level advisory lock keyed by the run id, held on a connection of its
  own for as long as the attempt runs. When the holder dies, its session ends and the lock is
  released by the server: no lease table to clean up, no expiry to tune. Keepalives on the
  connection (see StoreConfig.pg_conninfo) bound how long a vanished node keeps it.
- SQLite (one machine by construction): an exclusive `flock` on a file per run in the state
  directory; the kernel releases it when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from foundry.adapters.store.config import StoreConfig


def advisory_key(run_id: UUID) -> int:
    """A signed 64-bit advisory-lock key for the run (PostgreSQL's bigint lock space)."""
    digest = hashlib.sha256(b"foundry/run-lease/" + run_id.bytes).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RunLease:
    """`with RunLease(...) as lease: if lease.acquire(wait_seconds): ...` releases on exit."""

    def __init__(self, config: StoreConfig, state_dir: Path, run_id: UUID) -> None:
        self.config, self.state_dir, self.run_id = config, state_dir, run_id
        self._conn: Any = None  # the lease's own connection, open from the first try
        self._conn_holds = False
        self._file: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._conn_holds or self._file is not None

    def acquire(self, wait_seconds: float = 0.0, poll_seconds: float = 0.25) -> bool:
        """True once held; False if another holder kept it for `wait_seconds`."""
        if self.held:
            return True
        deadline = time.monotonic() + wait_seconds
        while True:
            if self._try():
                return True
            if time.monotonic() >= deadline:
                self.release()  # closes the connection the tries used
                return False
            time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))

    def _try(self) -> bool:
        if self.config.kind == "postgres":
            return self._try_postgres()
        return self._try_file()

    def _try_postgres(self) -> bool:
        import psycopg

        if self._conn is None:  # one connection for every try of a wait, kept if it wins
            self._conn = psycopg.connect(**self.config.pg_conninfo(), autocommit=True,
                                         application_name=f"foundry-lease-{self.run_id}")
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                 (advisory_key(self.run_id),)).fetchone()
        self._conn_holds = row is not None and bool(row[0])
        return self._conn_holds

    def _try_file(self) -> bool:
        path = self.state_dir / "leases" / f"{self.run_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)  # who holds it, for a person looking at the file
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._conn is not None:
            if self._conn_holds:
                with contextlib.suppress(Exception):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)",
                                       (advisory_key(self.run_id),))
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn, self._conn_holds = None, False
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
