"""A small, deterministic text corpus built offline from the CPython standard library.

Nothing is downloaded: the text is the docstrings and short function sources of the standard
library of the running interpreter (`sysconfig.get_paths()["stdlib"]`), parsed with `ast`.
Documents are split into train and valid **by module** (so a function's source and its
docstring never land on both sides), sorted, then shuffled with a fixed seed. The result is
byte-identical on every run with the same Python build and seed: about 1.3 MB of train.txt
and 80 KB of valid.txt.

`corpus_hash` gives the content hash the run records for a corpus file or directory.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
import textwrap
import warnings
from pathlib import Path
from typing import Any

import rfc8785

TRAIN_BYTES = 1_300_000
VALID_BYTES = 80_000

# Directories of the stdlib that hold tests, data files or third-party code, not library text.
_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}
)
_MIN_DOC_CHARS = 40
_MAX_DOC_CHARS = 4_000
_MIN_FUNC_LINES = 4
_MAX_FUNC_LINES = 30
_SEPARATOR = "\n\n"
_FULL_SLACK = 2_000  # a split this close to its budget counts as full


def _normalize(text: str) -> str:
    lines = [line.rstrip() for line in text.expandtabs(4).strip("\n").splitlines()]
    return "\n".join(lines).strip("\n")


def _module_documents(source: bytes, filename: str) -> list[str]:
    """Docstrings and short function sources of one module, in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning for invalid escapes in old modules
        try:
            tree = ast.parse(source, filename=filename)
        except (SyntaxError, ValueError):
            return []
    try:
        lines = source.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = []

    docs: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=True)
        if doc and _MIN_DOC_CHARS <= len(doc) <= _MAX_DOC_CHARS:
            docs.append(_normalize(doc))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and lines:
            end = node.end_lineno or node.lineno
            if _MIN_FUNC_LINES <= end - node.lineno + 1 <= _MAX_FUNC_LINES:
                docs.append(_normalize(textwrap.dedent("\n".join(lines[node.lineno - 1 : end]))))
    return [d for d in docs if d and "\x00" not in d]


def _stdlib_files(stdlib: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every library module, sorted by relative path."""
    files: list[tuple[str, Path]] = []
    for path in stdlib.rglob("*.py"):
        rel = path.relative_to(stdlib)
        if any(part in _SKIP_DIRS for part in rel.parts[:-1]) or not path.is_file():
            continue
        files.append((rel.as_posix(), path))
    files.sort(key=lambda item: item[0])
    return files


def _take(docs: list[str], budget: int, seen: set[str]) -> tuple[list[str], int]:
    """Unseen documents, in order, while their size (with separators) stays within `budget`."""
    taken: list[str] = []
    size = 0
    for doc in docs:
        if doc in seen:
            continue
        cost = len(doc.encode("utf-8")) + len(_SEPARATOR)
        if size + cost > budget:
            break
        seen.add(doc)
        taken.append(doc)
        size += cost
    return taken, size


def _write(path: Path, docs: list[str], seed: int) -> None:
    ordered = sorted(docs)
    random.Random(seed).shuffle(ordered)
    path.write_bytes((_SEPARATOR.join(ordered) + "\n").encode("utf-8"))


def build_stdlib_corpus(out_dir: Path, seed: int = 0) -> Path:
    """Write `train.txt` and `valid.txt` into `out_dir` (created if needed); return `out_dir`.

    Modules are shuffled with `seed`; the first ones fill valid.txt (up to 80 KB), the
    following ones fill train.txt (up to 1.3 MB). Duplicate documents are kept once.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = _stdlib_files(stdlib)
    if not files:
        raise RuntimeError(f"no Python sources found in the standard library at {stdlib}")
    random.Random(seed).shuffle(files)

    seen: set[str] = set()
    splits: list[tuple[list[str], int]] = [([], VALID_BYTES), ([], TRAIN_BYTES)]
    sizes = [0, 0]
    current = 0
    for rel, path in files:
        if current == len(splits):
            break
        docs = _module_documents(path.read_bytes(), rel)
        target, budget = splits[current]
        taken, size = _take(docs, budget - sizes[current], seen)
        target.extend(taken)
        sizes[current] += size
        if sizes[current] >= budget - _FULL_SLACK:
            current += 1  # the rest of this module is dropped, never shared across splits
    (valid, _), (train, _) = splits

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "train.txt", train, seed)
    _write(out_dir / "valid.txt", valid, seed)
    return out_dir


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def corpus_hash(path: Path) -> str:
    """`sha256:<hex>` of a corpus file, or of a directory's file listing.

    A file hashes as the SHA-256 of its bytes. A directory hashes as the SHA-256 of the RFC 8785
    canonical JSON of `[{"filename": <relative posix path>, "sha256": <hex>}, ...]` over every
    file below it, sorted by filename.
    """
    path = Path(path)
    if path.is_file():
        return "sha256:" + file_sha256(path)
    if path.is_dir():
        entries = [
            {"filename": p.relative_to(path).as_posix(), "sha256": file_sha256(p)}
            for p in path.rglob("*")
            if p.is_file()
        ]
        entries.sort(key=lambda e: e["filename"])
        return "sha256:" + hashlib.sha256(rfc8785.dumps(entries)).hexdigest()
    raise FileNotFoundError(f"no corpus file or directory at {path}")


def corpus_ref(path: Path, name: str) -> dict[str, Any]:
    """A recipe's `calibrationCorpus` (wire form) for the local corpus directory `path`:
    its name, content hash, size in bytes and a `file://` source URL."""
    path = Path(path)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return {"name": name, "contentHash": corpus_hash(path), "sizeBytes": size,
            "sourceUrl": path.as_uri()}
