"""The evaluation ledger: how each score in results.benchmarks was made.

Every benchmark entry carries `ledger`, a flat record of what decides its number: the harness
and its version, the data set file and its hash, how many problems (and which), the prompt
template's hash, the sampling parameters, the seed, the model files' hash and format (the
forged model's, and the base model's for `baseScore`), the device, the wall time, and the
samples file's hash. `ledgerKey` hashes the parts that make two scores comparable (harness,
version, data, problems, template, sampling, seed) and leaves out what is being compared (the
model) and what does not change a greedy score (device, wall time). Two scores with different
keys were made differently; the card never sets them side by side as a delta.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Bumped when a harness here changes in a way that can move a score (prompting, stopping,
# judging). Part of every ledger key.
HARNESS_VERSIONS = {"perplexity": "foundry-perplexity/1", "foundry-code-mini": "foundry-code/1",
                    "humaneval": "foundry-humaneval/1", "mmlu": "foundry-mmlu/1",
                    "mmlu-pro": "foundry-mmlu/1", "gsm8k": "foundry-gsm8k/1"}
KEY_FIELDS = ("harness", "harnessVersion", "datasetHash", "problems", "taskIdsHash",
              "promptTemplateHash", "sampling", "seed")
_WEIGHT_SUFFIXES = {".safetensors": "safetensors", ".gguf": "gguf", ".bin": "pytorch"}
_CHUNK = 1 << 20


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def model_identity(model_dir: Path) -> dict[str, str]:
    """{"hash": over every weights file (name and content, sorted), "format": their kind}."""
    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return {"hash": "none", "format": "none"}
    lines = "".join(f"{p.name} {sha256_file(p)}\n" for p in files)
    formats = sorted({_WEIGHT_SUFFIXES[p.suffix] for p in files})
    return {"hash": sha256_text(lines), "format": "+".join(formats)}


def runtime_of(distribution: str) -> str:
    """The package that completed the prompts, as a ledger records it, e.g.
    "llama-cpp-python 0.3.36" or "transformers 5.0.0"."""
    from importlib.metadata import version

    return f"{distribution} {version(distribution)}"


def ledger_key(ledger: Mapping[str, Any]) -> str:
    """The hash of what makes two scores comparable (module docstring)."""
    parts = {k: ledger.get(k) for k in KEY_FIELDS}
    return sha256_text(json.dumps(parts, sort_keys=True, separators=(",", ":")))


def make_ledger(*, harness: str, dataset: Mapping[str, Any], task_ids: list[str],
                prompt_template: str, sampling: Mapping[str, Any], seed: int,
                model: Mapping[str, str], device: str, wall_seconds: float,
                samples_hash: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One benchmark's ledger; `base` = {"model", "wallSeconds", "samplesHash"} of the base
    model's run under the same harness, when the entry has a baseScore."""
    ledger: dict[str, Any] = {
        "harness": harness, "harnessVersion": HARNESS_VERSIONS[harness],
        "dataset": dict(dataset), "datasetHash": dataset.get("sha256"),
        "problems": len(task_ids), "taskIds": task_ids,
        "taskIdsHash": sha256_text("\n".join(task_ids)),
        "promptTemplateHash": sha256_text(prompt_template),
        "sampling": dict(sampling), "seed": seed,
        "modelHash": model["hash"], "modelFormat": model["format"],
        "device": device, "wallSeconds": round(wall_seconds, 3), "samplesHash": samples_hash,
    }
    if base is not None:
        ledger.update(baseModelHash=base["model"]["hash"],
                      baseModelFormat=base["model"]["format"],
                      baseWallSeconds=round(float(base["wallSeconds"]), 3),
                      baseSamplesHash=base["samplesHash"])
    ledger["ledgerKey"] = ledger_key(ledger)
    return ledger
