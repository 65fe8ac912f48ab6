"""Files written and read on a user's behalf, without following what an attacker planted.

Writes never follow a symlink: each file is written to a fresh temp file created with
`O_CREAT | O_EXCL | O_NOFOLLOW` inside the target directory (through a directory file
descriptor, so the directory cannot be swapped between the check and the write), then renamed
over the final name; a symlink planted at the final name or at the temp name is replaced or
refused, never written through. File names are names, never paths: `safe_file_name` reduces a
user string (a recipe name) to one, and `write_atomic` refuses anything else, so a write always
lands directly inside the directory it was given. Directories under /proc, /sys and /dev are
refused as targets (after resolving symlinks). Reads of user files take regular files only,
up to a size cap, so `/dev/zero`, a FIFO or a symlink to either is refused before any byte is
read.

Every refusal is InvalidInputError naming the field, so it reaches the caller as an envelope.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from foundry.domain.errors import InvalidInputError

FORBIDDEN_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20


def safe_file_name(text: str, *, fallback: str) -> str:
    """`text` reduced to a plain file name: [A-Za-z0-9._-] only, no leading dot, not empty.

    `../../tmp/x/escaped` becomes `tmp_x_escaped`; a name with nothing left is `fallback`.
    """
    name = _UNSAFE.sub("_", text).strip("._-")[:MAX_NAME_CHARS].strip("._-")
    return name or fallback


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_target_dir(path: Path, field: str) -> Path:
    """`path` resolved; InvalidInputError if it, or what it resolves to, lies under /proc,
    /sys or /dev (both: /proc/self/cwd resolves to an ordinary directory)."""
    given, resolved = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    for root in FORBIDDEN_ROOTS:
        if _is_under(given, root) or _is_under(resolved, root):
            raise InvalidInputError(field, f"{path} resolves to {resolved}, under {root}: "
                                    "files are never written there")
    return resolved


def writable_dir(path: Path, field: str, *, create: bool) -> Path:
    """The resolved directory to write into: checked, created if `create`, else must exist."""
    resolved = check_target_dir(path, field)
    try:
        if create:
            resolved.mkdir(parents=True, exist_ok=True)
        if not resolved.is_dir():
            raise InvalidInputError(field, f"{path} is not an existing directory")
    except OSError as e:
        raise InvalidInputError(field, f"cannot create the directory {path}: "
                                f"{e.strerror}") from None
    return resolved


def _plain_name(name: str, field: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\0" in name or name != name.strip():
        raise InvalidInputError(field, f"{name!r} is not a plain file name")
    return name


def write_atomic(directory: Path, name: str, content: bytes | Path, *, field: str) -> Path:
    """Write `content` (bytes, or a file to copy) as `directory/name`; see the module docs."""
    _plain_name(name, field)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidInputError(field, f"cannot open the directory {directory}: "
                                f"{e.strerror}") from None
    tmp = f".{name[:80]}.{secrets.token_hex(8)}.partial"
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dir_fd)
        except OSError as e:
            raise InvalidInputError(field, f"cannot write into {directory}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(content, bytes):
                    fh.write(content)
                else:
                    with content.open("rb") as src:
                        shutil.copyfileobj(src, fh, _CHUNK)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    except OSError as e:
        raise InvalidInputError(field, f"cannot write {directory / name}: {e.strerror}") from None
    finally:
        os.close(dir_fd)
    return directory / name


def read_regular_file(path: Path, *, max_bytes: int, field: str) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`; else InvalidInputError.

    The check is on the opened descriptor (`fstat`), so a symlink to /dev/zero is seen as the
    device it is; O_NONBLOCK keeps the open itself from hanging on a FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidInputError(field, f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(field, f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise InvalidInputError(field, f"{path} is {info.st_size} bytes; the limit is "
                                    f"{max_bytes}")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as e:
            raise InvalidInputError(field, f"cannot read {path}: {e.strerror}") from None
    if len(data) > max_bytes:  # it grew after the fstat
        raise InvalidInputError(field, f"{path} is over the limit of {max_bytes} bytes")
    return data
