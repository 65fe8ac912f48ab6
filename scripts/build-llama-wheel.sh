#!/usr/bin/env bash
# Build (once) a portable wheel of llama-cpp-python and keep it in a cache directory.
#
# Usage: scripts/build-llama-wheel.sh [PYTHON]
#   PYTHON               interpreter to build with (default: python3); a cached wheel is reused
#                        only if its tags suit it (the wheel is py3-none-linux_x86_64: ctypes)
#   FOUNDRY_WHEEL_CACHE  cache directory (default: $HOME/.cache/foundry/wheels)
#
# PyPI has no binary wheel of llama-cpp-python for Linux x86_64, so pip compiles the sdist:
# 7 to 11 minutes on 2 cores. This script does it once; later runs find the cached wheel, print
# its path and exit 0. The build uses GGML_NATIVE=OFF (no -march=native, so the wheel runs on
# other x86_64 CPUs with AVX2) and skips llava. It builds into a temporary directory and moves
# the finished wheel into the cache with an atomic rename, so an interrupted build never leaves
# a partial wheel behind. The last line printed on success is the wheel's path.
#
# Install it with: PYTHON -m pip install --no-deps "$(scripts/build-llama-wheel.sh PYTHON | tail -n1)"
set -euo pipefail

VERSION="0.3.36"
PYTHON="${1:-python3}"
CACHE="${FOUNDRY_WHEEL_CACHE:-$HOME/.cache/foundry/wheels}"

log() { printf '[build-llama-wheel %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "python interpreter not found: $PYTHON"
    exit 2
fi

mkdir -p "$CACHE"

# Print the first cached wheel whose tags this interpreter accepts (a wheel for another
# platform or Python ABI in the same cache is skipped). Uses the packaging copy pip vendors.
find_cached() {
    "$PYTHON" - "$CACHE" "$VERSION" <<'PY'
import sys
from pathlib import Path

from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import parse_wheel_filename

cache, version = Path(sys.argv[1]), sys.argv[2]
supported = set(sys_tags())
for wheel in sorted(cache.glob(f"llama_cpp_python-{version}-*.whl")):
    try:
        _, _, _, tags = parse_wheel_filename(wheel.name)
    except Exception:
        continue
    if tags & supported:
        print(wheel)
        sys.exit(0)
sys.exit(1)
PY
}

if cached="$(find_cached)"; then
    log "cached wheel found, not building"
    printf '%s\n' "$cached"
    exit 0
fi

# The temporary directory lives inside the cache so the final mv is a same-filesystem rename.
TMP="$(mktemp -d "$CACHE/.build-XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

log "building llama-cpp-python==$VERSION with $PYTHON ($("$PYTHON" --version 2>&1)); this takes 7-11 min on 2 cores"
log "cache: $CACHE; temp: $TMP"
start="$(date +%s)"

CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
    "$PYTHON" -m pip wheel --no-deps --no-cache-dir -w "$TMP/wheels" "llama-cpp-python==$VERSION" >&2

shopt -s nullglob
built=("$TMP"/wheels/llama_cpp_python-"$VERSION"-*.whl)
shopt -u nullglob
if [ "${#built[@]}" -ne 1 ]; then
    log "expected exactly one wheel in $TMP/wheels, found ${#built[@]}"
    exit 1
fi

dest="$CACHE/$(basename "${built[0]}")"
# $TMP is inside $CACHE, so this is a rename on one filesystem: atomic, never a partial wheel.
mv -f "${built[0]}" "$dest"

elapsed=$(( $(date +%s) - start ))
log "built $(basename "$dest") ($(du -h "$dest" | cut -f1)) in $((elapsed / 60)) min $((elapsed % 60)) s"
printf '%s\n' "$dest"
