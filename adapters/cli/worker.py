"""`python -m foundry.adapters.cli.worker RUN_ID`: execute (or resume) one run, then exit.

The store is `--db URL`, else FOUNDRY_DATABASE_URL: `forge run --detach` passes it in the
environment, never on the command line, where any local user could read its password.

This is what `forge/run` with `wait: false` starts in the background. It writes nothing but
events (through the orchestrator) and a log file; exit code 0 when the run completed, 3 when
another attempt holds the run's lease (adapters/lease.py) and this one left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from uuid import UUID

import structlog

from foundry.adapters.bootstrap import Foundry
from foundry.adapters.log_setup import configure_logging
from foundry.adapters.runs.launch import execute_leased

# How long a worker waits for an earlier attempt (a process being killed, say) to let go.
LEASE_WAIT_SECONDS = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="foundry-worker", description=__doc__)
    parser.add_argument("run_id", type=UUID)
    parser.add_argument("--db", help="database URL of the store holding the run")
    parser.add_argument("--state-dir", type=Path, help="blob and heartbeat directory")
    args = parser.parse_args(argv)
    configure_logging("INFO")
    with Foundry.open(args.db, state_dir=args.state_dir) as foundry:
        outcome = execute_leased(foundry, args.run_id, wait_seconds=LEASE_WAIT_SECONDS)
    if outcome is None:
        structlog.get_logger().warning("lease_held_elsewhere", run_id=str(args.run_id))
        return 3
    return 0 if outcome.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
