"""Which files of a source model directory a run copies into the blob store (#17 item 10).

A `baseModel` directory used to be stored whole: a `.ssh/` or `.git/` inside it, a README,
anything planted beside the weights went into the store and on into publications. Only what
loads a model is kept: configs and tokenizer files, weights, GGUF files, vocabularies and
templates; nothing under a dot-directory and no dotfile. The suffixes are those the hub
download asks for (executors/real/sources.py `_DOWNLOAD_PATTERNS`) plus the weight formats.
"""

from __future__ import annotations

from pathlib import PurePosixPath

MODEL_SUFFIXES = frozenset({".json", ".safetensors", ".bin", ".gguf", ".model", ".txt",
                            ".jinja", ".tiktoken"})


def is_model_file(rel: str) -> bool:
    """Whether the file at `rel` (relative, posix) is part of a model, not something beside it."""
    path = PurePosixPath(rel)
    if any(part.startswith(".") for part in path.parts):
        return False
    name = path.name.lower()
    return name.startswith("tokenizer") or path.suffix.lower() in MODEL_SUFFIXES
