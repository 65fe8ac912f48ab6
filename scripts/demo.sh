#!/usr/bin/env bash
# Install everything, then run the main job on the embedded default store (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
