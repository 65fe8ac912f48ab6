#!/usr/bin/env bash
# Static checks, run by .ci/run before the tests (and by hand: scripts/lint.sh):
#   ruff check    style and likely bugs (pyproject [tool.ruff])
#   mypy          strict types, across modules (pyproject [tool.mypy])
#   lint-imports  the layering contracts (pyproject [tool.importlinter])
# All three run even when one fails, so one run lists everything; the exit status is non-zero
# when any of them failed. Needs .venv (scripts/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# The code imports itself as `foundry.*`, which exists only through setuptools' editable
# finder, an import hook that mypy does not run. One symlink per top folder under
# build/typecheck/foundry/ (mypy_path in pyproject) gives mypy the same names; without it
# every `from foundry...` import would be an unresolved Any and nothing across modules would
# be checked.
TYPECHECK=build/typecheck/foundry
mkdir -p "$TYPECHECK"
for package in domain adapters projections executors; do
    ln -sfn "../../../$package" "$TYPECHECK/$package"
done

failed=()
run() {
    local name=$1
    shift
    echo "lint.sh: $name" >&2
    "$@" || failed+=("$name")
}
run "ruff check" "$BIN/ruff" check --output-format concise .
# mypy names files by the path it found them under; print them as the repository's paths.
run "mypy" bash -c "set -o pipefail; '$BIN/mypy' -p foundry | sed 's#^$TYPECHECK/##'"
# The same folder on PYTHONPATH makes import-linter read this tree too, wherever .venv's
# editable install points (a clone sharing a venv, say).
run "lint-imports" env PYTHONPATH=build/typecheck "$BIN/lint-imports"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "lint.sh: ruff, mypy and import-linter all pass" >&2
