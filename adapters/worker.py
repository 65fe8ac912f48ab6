"""`python -m adapters.worker RUN_ID --db URL`: execute (or resume) one run, then exit.

This is what `forge/run --detach` starts in the background. It writes nothing but events
(through the orchestrator) and a log file; exit code 0 when the run completed.
"""

from __future__ import annotations

import argparse
import sys
from uuid import UUID

from adapters.bootstrap import Foundry
from adapters.logging import configure_logging
from adapters.orchestrator import Orchestrator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="foundry-worker", description=__doc__)
    parser.add_argument("run_id", type=UUID)
    parser.add_argument("--db", help="database URL of the store holding the run")
    args = parser.parse_args(argv)
    configure_logging("INFO")
    with Foundry.open(args.db) as foundry:
        orchestrator = Orchestrator(foundry.runs, foundry.registry, foundry.blobs,
                                    foundry.state_dir)
        outcome = orchestrator.execute(args.run_id)
    return 0 if outcome.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
