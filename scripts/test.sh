#!/usr/bin/env bash
# Install everything, then run the whole test suite: unit, integration (SQLite and PostgreSQL),
# end-to-end CLI, and the slow tests that forge real tiny models.
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres); FOUNDRY_TEST_PG overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
