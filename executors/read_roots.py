"""Where a run may read what a recipe names (#17 item 10).

`source.baseModel` and `calibrationCorpus.sourceUrl` are a caller's strings. Before this, a
recipe could name `/etc/passwd` as its corpus (hashed, the hash printed in the error, then
trained on) or `/usr` (hashed for minutes). A local path a recipe names is now read only when,
resolved (symlinks followed), it lies under one of:

- the Hugging Face hub cache (`huggingface_hub.constants.HF_HUB_CACHE`),
- Foundry's model cache (`FOUNDRY_MODEL_CACHE`, default ~/.cache/foundry/models),
- the state directory (`FOUNDRY_STATE_DIR`, and the one bootstrap opened the store with:
  rehearsal twins and stand-in corpora live there),
- each directory the operator lists in `FOUNDRY_MODEL_ROOTS` (os.pathsep-separated).

A corpus must also be regular files only (no FIFO, device or socket; a directory's symlinks
are not followed) of at most `FOUNDRY_CORPUS_MAX_BYTES` (default 1 GiB) in at most
MAX_CORPUS_FILES files. A refusal names the field, the path and the roots, and is raised before
a byte is read: no hash of a refused file appears anywhere.

Like `model_cache_root`, the roots are read from the environment where the read happens: the
executors run in detached workers and Ray tasks, which inherit the environment, not a
`Settings` object.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError

ENV_MODEL_ROOTS = "FOUNDRY_MODEL_ROOTS"
ENV_CORPUS_MAX_BYTES = "FOUNDRY_CORPUS_MAX_BYTES"
DEFAULT_CORPUS_MAX_BYTES = 1024**3
MAX_CORPUS_FILES = 10_000


class ReadRefusedError(ExecutorError, PermissionError):
    """Raised when a recipe names a local path a run may not read; names field, path, rule."""

    code = "read_refused"

    def __init__(self, field: str, path: str, rule: str) -> None:
        self.field, self.path, self.rule = field, path, rule
        super().__init__(f"{field}: {path!r} {rule}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.path, self.rule))


# Roots the composition root grants for this process: the store's state directory, which is
# not always FOUNDRY_STATE_DIR (by default it sits next to the store).
_GRANTED: set[Path] = set()


def grant_root(root: Path) -> None:
    """Let runs in this process read under `root` (bootstrap grants the state directory)."""
    _GRANTED.add(Path(root).expanduser())


def read_roots() -> list[Path]:
    """The directories a recipe's local paths may lie under (see the module docstring)."""
    from huggingface_hub import constants

    roots = [Path(constants.HF_HUB_CACHE)]
    cache = os.environ.get("FOUNDRY_MODEL_CACHE")
    roots.append(Path(cache).expanduser() if cache else
                 Path.home() / ".cache" / "foundry" / "models")
    if os.environ.get("FOUNDRY_STATE_DIR"):
        roots.append(Path(os.environ["FOUNDRY_STATE_DIR"]).expanduser())
    roots += [Path(p).expanduser() for p in
              os.environ.get(ENV_MODEL_ROOTS, "").split(os.pathsep) if p.strip()]
    roots += sorted(_GRANTED)
    return [Path(os.path.realpath(r)) for r in roots]


def confine(path: Path, field: str) -> Path:
    """`path` resolved, if it lies under a read root; ReadRefusedError otherwise."""
    real = Path(os.path.realpath(path))
    roots = read_roots()
    if not any(real == r or r in real.parents for r in roots):
        raise ReadRefusedError(
            field, str(path), f"is outside the directories a run may read "
            f"({', '.join(str(r) for r in roots)}); list its directory in {ENV_MODEL_ROOTS}")
    return real


def corpus_max_bytes() -> int:
    raw = os.environ.get(ENV_CORPUS_MAX_BYTES)
    return int(raw) if raw and raw.isdigit() else DEFAULT_CORPUS_MAX_BYTES


def check_corpus(path: Path, field: str) -> Path:
    """A corpus path confined to the roots, regular files only, within the size caps."""
    real = confine(path, field)
    limit, total, count = corpus_max_bytes(), 0, 0
    for file in _corpus_files(real, field, str(path)):
        info = file.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise ReadRefusedError(field, str(path), f"holds {file.name!r}, not a regular file")
        total, count = total + info.st_size, count + 1
        if count > MAX_CORPUS_FILES or total > limit:
            raise ReadRefusedError(field, str(path), f"is over the corpus limits ({limit} bytes, "
                                   f"{MAX_CORPUS_FILES} files; {ENV_CORPUS_MAX_BYTES})")
    return real


def _corpus_files(real: Path, field: str, given: str) -> list[Path]:
    if not real.is_dir():
        return [real]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(real):  # does not follow directory links
        for name in [*filenames, *(d for d in dirnames if os.path.islink(Path(dirpath, d)))]:
            files.append(Path(dirpath, name))
        if len(files) > MAX_CORPUS_FILES:
            raise ReadRefusedError(field, given, f"holds over {MAX_CORPUS_FILES} files")
    return files
