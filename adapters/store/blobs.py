"""A content-addressed blob store on a local directory: atomic writes, verification on read.

Layout: ``root/sha256/<first 2 hex>/<64 hex>``; ``root/tmp`` holds files being written, on the
same filesystem so ``os.replace`` into place is atomic. A blob at its final path is therefore
always complete: a write that fails leaves nothing there (and removes its temp file; a process
killed mid-write may leave one in ``root/tmp``, never at a final path). Existing blobs are never
overwritten, only re-hashed; a corrupt one is replaced atomically and logged as
``blob_repaired``. ``materialize`` re-hashes every blob while copying it out and refuses a
mismatch, so a flipped bit on disk never reaches a stage.

Why it is written here: no maintained Python library gives an atomic, verify-on-read,
content-addressed local store in a few lines. git-annex and DVC do this and much more, but they
are whole tools with their own repositories, remotes and CLIs; what the forge needs is about a
hundred lines of hashlib, ``os.replace`` and ``fsync``.

``tree_hash`` is the format's weights hash: SHA-256 over the canonical JSON of the list of
``{"filename", "sha256"}`` (hex without prefix) sorted by filename. ``hash_dir`` gives the same
value for a directory on disk without storing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import structlog

from foundry.adapters.store.model_files import is_model_file
from foundry.domain.errors import FoundryError
from foundry.domain.hashing import content_hash

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{64}")
_BLOB_MODE = 0o444  # blobs are read-only: an in-place edit would break their name
_FILE_MODE = 0o644


class BlobError(FoundryError):
    """Root of the blob store's errors (FoundryErrors: each reaches a caller as an envelope)."""

    code = "blob_error"


def _named(path: str | None) -> str:
    return f"{path}: " if path else ""


class BlobMissingError(BlobError, LookupError):
    code = "blob_missing"

    def __init__(self, sha256: str, path: str | None = None) -> None:
        self.sha256, self.path = sha256, path
        super().__init__(f"{_named(path)}blob {sha256} is not in the store")

    def __reduce__(self) -> tuple[Any, ...]:  # survives a worker process boundary
        return type(self), (self.sha256, self.path)


class BlobCorruptError(BlobError):
    code = "blob_corrupt"

    def __init__(self, sha256: str, found: str, path: str | None = None) -> None:
        self.sha256, self.found, self.path = sha256, found, path
        super().__init__(f"{_named(path)}blob {sha256} is corrupt: its content hashes to {found}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.sha256, self.found, self.path)


class BlobSourceError(BlobError, ValueError):
    """A file offered to `put_dir` that the store refuses to ingest (a symlink out of it)."""

    code = "invalid_input"

    def __init__(self, path: str, rule: str) -> None:
        self.path, self.rule = path, rule
        super().__init__(f"{path}: {rule}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.rule)


@dataclass(frozen=True)
class BlobRef:
    sha256: str  # "sha256:<hex>"
    size: int


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative posix path
    sha256: str  # "sha256:<hex>"
    size: int
    role: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "role": self.role}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRecord:
        return cls(
            path=str(data["path"]), sha256=str(data["sha256"]),
            size=int(data["size"]), role=str(data["role"]),
        )


def _write_chunk(fh: IO[bytes], chunk: bytes) -> None:
    """One write of the copy loop (a seam tests patch to simulate a crash mid-copy)."""
    fh.write(chunk)


def _copy_hashing(src: Path, dst: IO[bytes]) -> tuple[str, int]:
    """Copy `src` into `dst`, fsync it, return ("sha256:<hex>", size)."""
    digest, size = hashlib.sha256(), 0
    with src.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            _write_chunk(dst, chunk)
    dst.flush()
    os.fsync(dst.fileno())
    return "sha256:" + digest.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    """("sha256:<hex>", size) of a file, read in 1 MiB chunks (never whole into memory)."""
    return _hash_file(path)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temp_in(directory: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temp file in `directory`, removed on exit unless it was moved away."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".blob-", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, tmp
    finally:
        tmp.unlink(missing_ok=True)


def _link_roots(directory: Path) -> list[Path]:
    """Where a file symlink under `directory` may point: inside it, or, for a Hugging Face
    cache snapshot (`<repo>/snapshots/<rev>`), into that repo's `blobs/` folder."""
    real = Path(os.path.realpath(directory))
    roots = [real]
    if real.parent.name == "snapshots":
        roots.append(real.parent.parent / "blobs")
    return roots


def _regular_files(directory: Path, *, contained: bool = False) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every file under `directory`, sorted by relative path.

    Symlinks to files count as files (HF cache snapshots are links into a blob folder);
    directory symlinks are not followed. With `contained`, a file symlink resolving outside
    `_link_roots(directory)` raises BlobSourceError instead (a planted `model.bin ->
    ~/.ssh/id_rsa` would otherwise be copied into the store and published).
    """
    roots = _link_roots(directory) if contained else []
    found: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_file():
                continue
            rel = path.relative_to(directory).as_posix()
            if contained and path.is_symlink():
                target = Path(os.path.realpath(path))
                if not any(target == r or r in target.parents for r in roots):
                    raise BlobSourceError(rel, f"is a symlink to {target}, outside the "
                                          "directory being stored: refused")
            found.append((rel, path))
    return sorted(found)


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or ".." in rel.parts:
        raise ValueError(f"record path {path!r} must be relative and stay inside the destination")
    return rel


def tree_hash(records: Iterable[FileRecord]) -> str:
    """The weights hash: content_hash of the sorted [{"filename", "sha256": <hex>}]."""
    entries = sorted(
        ({"filename": r.path, "sha256": r.sha256.removeprefix("sha256:")} for r in records),
        key=lambda entry: entry["filename"],
    )
    return content_hash(entries)


def hash_dir(directory: Path) -> str:
    """`tree_hash` of a directory on disk, without storing it."""
    records = []
    for rel, path in _regular_files(directory):
        sha, size = _hash_file(path)
        records.append(FileRecord(path=rel, sha256=sha, size=size, role=""))
    return tree_hash(records)


class BlobStore:
    """Content-addressed files under `root`; see the module docstring for the guarantees."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"

    def path_of(self, sha256: str) -> Path:
        hexdigest = sha256.removeprefix("sha256:")
        if not _HEX.fullmatch(hexdigest):
            raise ValueError(f"not a sha256 content hash: {sha256!r}")
        return self._blobs / hexdigest[:2] / hexdigest

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def verify(self, sha256: str) -> bool:
        """Whether the blob exists and its content still hashes to its name."""
        path = self.path_of(sha256)
        if not path.is_file():
            return False
        return _hash_file(path)[0] == "sha256:" + sha256.removeprefix("sha256:")

    def put_file(self, path: Path) -> BlobRef:
        with _temp_in(self._tmp) as (fh, tmp):
            sha, size = _copy_hashing(Path(path), fh)
            fh.close()
            final = self.path_of(sha)
            if final.is_file():
                found = _hash_file(final)[0]
                if found == sha:
                    return BlobRef(sha256=sha, size=size)
                log.warning("blob_repaired", sha256=sha, path=str(final), found=found)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(_BLOB_MODE)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        return BlobRef(sha256=sha, size=size)

    def put_dir(self, directory: Path, role: str) -> list[FileRecord]:
        records = []
        for rel, path in _regular_files(Path(directory), contained=True):
            if role == "source" and not is_model_file(rel):
                continue  # a source dir's dotfiles, READMEs, .git/: not the model (#17)
            ref = self.put_file(path)
            records.append(FileRecord(path=rel, sha256=ref.sha256, size=ref.size, role=role))
        return records

    def verify_records(self, records: Iterable[FileRecord]) -> list[str]:
        """The paths of the records whose blob is missing or corrupt."""
        return [r.path for r in records if not self.verify(r.sha256)]

    def check_records(self, records: Iterable[FileRecord]) -> list[BlobError]:
        """Re-hash (streaming) every record's blob; one error per missing or corrupt blob,
        naming the record's path. Empty when every blob holds what its record says."""
        problems: list[BlobError] = []
        for r in records:
            path = self.path_of(r.sha256)
            if not path.is_file():
                problems.append(BlobMissingError(r.sha256, r.path))
                continue
            found = _hash_file(path)[0]
            if found != "sha256:" + r.sha256.removeprefix("sha256:"):
                problems.append(BlobCorruptError(r.sha256, found, r.path))
        return problems

    def materialize(self, records: Iterable[FileRecord], dest: Path) -> None:
        """Copy each record's blob to `dest/<record.path>`, verifying it on the way.

        Each destination file appears atomically and only with the recorded content; a missing
        blob raises BlobMissingError, a corrupt one BlobCorruptError.
        """
        dest = Path(dest)
        for record in records:
            target = dest.joinpath(*_safe_relative(record.path).parts)
            source = self.path_of(record.sha256)
            if not source.is_file():
                raise BlobMissingError(record.sha256, record.path)
            with _temp_in(target.parent) as (fh, tmp):
                sha, _size = _copy_hashing(source, fh)
                fh.close()
                if sha != "sha256:" + record.sha256.removeprefix("sha256:"):
                    raise BlobCorruptError(record.sha256, sha, record.path)
                tmp.chmod(_FILE_MODE)
                os.replace(tmp, target)
