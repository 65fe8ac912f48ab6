"""Run untrusted, model-written Python in a separate, limited interpreter; never in-process.

`run_candidate(code, timeout_s=..., work_dir=...)` writes `code` into a fresh scratch directory
and runs it with `sys.executable -I -S` (isolated: no environment variables, user site,
site-packages or sitecustomize) and a stripped environment. Containment, in layers:

* **wall time**: the child gets its own process group, killed with SIGKILL at `timeout_s`;
* **rlimits**, set by the child's bootstrap before the candidate runs: CPU seconds, address
  space, file size, no core dumps (set in the child rather than in a `preexec_fn`, which the
  subprocess docs call unsafe in a multi-threaded parent: torch/OpenMP threads are live here);
* **network**: where `unshare -rn true` works, the child runs under `unshare -rn` in an empty
  network namespace (a kernel-level block). In every case the bootstrap replaces
  `socket.socket` and friends and an audit hook refuses every `socket.*` event. Without
  unshare this blocks Python-level sockets only, not a determined native escape;
* **filesystem and processes**: a `sys.addaudithook` hook refuses writes, renames, removals and
  directory changes outside the scratch directory, reads outside it and the standard library,
  starting processes (`subprocess`, `os.system`, `exec*`, `fork`, `spawn`) and loading `ctypes`.
  Audit hooks cannot be removed from Python code, but they are a Python-level guard, not a
  security boundary against native code.

A run passes only if the interpreter exits 0 **and** prints a per-run nonce after the code has
finished, so a `sys.exit(0)` before the asserts does not count as a pass. `containment` names
what was in force, e.g. "unshare-netns+audit-hook+rlimits".
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MEMORY_LIMIT_BYTES = 1 << 30
FILE_SIZE_LIMIT_BYTES = 1 << 20

_BOOTSTRAP = r"""
import os, resource, sys
_nonce = os.environ.pop("FOUNDRY_SANDBOX_NONCE")
for _res, _env in ((resource.RLIMIT_CPU, "CPU"), (resource.RLIMIT_AS, "AS"),
                   (resource.RLIMIT_FSIZE, "FSIZE"), (resource.RLIMIT_CORE, "CORE")):
    _v = int(os.environ.pop("FOUNDRY_SANDBOX_" + _env))
    resource.setrlimit(_res, (_v, _v))
_root = os.path.realpath(os.getcwd())
with open("candidate.py", encoding="utf-8") as _fh:
    _src = _fh.read()
_read_roots = [_root] + [os.path.realpath(p) for p in sys.path if p]
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                "os.link", "os.symlink", "os.truncate", "os.utime", "os.chdir",
                "os.setxattr", "os.removexattr", "shutil.rmtree", "shutil.move",
                "shutil.copyfile", "shutil.copytree", "shutil.chown"}
_DENY_PREFIXES = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.posix_spawn",
                  "os.spawn", "os.fork", "os.system", "os.kill", "os.killpg", "pty.",
                  "urllib.", "ftplib.", "smtplib.", "webbrowser.", "_posixsubprocess.")
_busy = []

def _inside(path, roots):
    if isinstance(path, int):
        return True
    p = os.path.realpath(os.fsdecode(path))
    return any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

def _deny(what):
    raise PermissionError("sandbox: " + what)

def _hook(event, args):
    if _busy:
        return
    _busy.append(1)
    try:
        if event.startswith(_DENY_PREFIXES):
            _deny(event + " is not allowed")
        if event == "import" and args[0] in ("ctypes", "_ctypes"):
            _deny("importing " + args[0] + " is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _WRITE)
            if path is not None and not _inside(path, [_root] if writing else _read_roots):
                _deny(("write to " if writing else "read of ") + os.fsdecode(path))
        elif event in ("os.listdir", "os.scandir"):
            if args[0] is not None and not _inside(args[0], _read_roots):
                _deny("listing " + os.fsdecode(args[0]))
        elif event in _PATH_EVENTS:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg, [_root]):
                    _deny(event + " outside the scratch dir: " + os.fsdecode(arg))
    finally:
        _busy.pop()

import socket, _socket
def _no_network(*args, **kwargs):
    raise PermissionError("sandbox: network access is disabled")
for _name in ("socket", "create_connection", "create_server", "socketpair", "fromfd",
              "getaddrinfo", "gethostbyname"):
    setattr(socket, _name, _no_network)
_socket.socket = _no_network
sys.addaudithook(_hook)
del _fh, _res, _env, _v, _name
exec(compile(_src, "candidate.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
sys.stdout.flush()
os.write(1, ("\n" + _nonce + "\n").encode())
"""


@dataclass(frozen=True)
class SandboxResult:
    """Whether the code ran to the end and exited 0; why not; which containment was in force."""

    passed: bool
    error: str | None
    containment: str
    seconds: float = 0.0


@functools.cache
def unshare_works() -> bool:
    """True where `unshare -rn true` succeeds (user + network namespaces are available)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def containment() -> str:
    """What `run_candidate` puts around the code on this machine."""
    net = "unshare-netns" if unshare_works() else "python-socket-block"
    return f"{net}+audit-hook+rlimits"


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else None


def run_candidate(code: str, *, timeout_s: float, work_dir: Path) -> SandboxResult:
    """Run `code` in a child interpreter under the containment above; see the module docs."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    box = Path(tempfile.mkdtemp(prefix="sandbox-", dir=work_dir))
    scratch, io_dir = box / "scratch", box / "io"
    scratch.mkdir()
    io_dir.mkdir()
    (scratch / "candidate.py").write_text(code, encoding="utf-8")
    nonce = secrets.token_hex(16)
    env = {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
        "FOUNDRY_SANDBOX_NONCE": nonce,
        "FOUNDRY_SANDBOX_CPU": str(int(timeout_s) + 1),
        "FOUNDRY_SANDBOX_AS": str(MEMORY_LIMIT_BYTES),
        "FOUNDRY_SANDBOX_FSIZE": str(FILE_SIZE_LIMIT_BYTES),
        "FOUNDRY_SANDBOX_CORE": "0",
    }
    cmd = [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP]
    if unshare_works():
        cmd = [shutil.which("unshare") or "unshare", "-rn", *cmd]
    started = time.perf_counter()
    with (io_dir / "stdout").open("wb") as out, (io_dir / "stderr").open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = round(time.perf_counter() - started, 3)
    stdout = (io_dir / "stdout").read_text(encoding="utf-8", errors="replace")
    stderr = (io_dir / "stderr").read_text(encoding="utf-8", errors="replace")
    if rc is None:
        error: str | None = f"timeout after {timeout_s:g}s"
    elif rc < 0:
        error = f"killed by {signal.Signals(-rc).name}"
    elif rc != 0:
        error = _last_line(stderr) or f"exit status {rc}"
    elif nonce not in stdout:
        error = "exited before the end of the program (no completion marker)"
    else:
        error = None
    return SandboxResult(passed=error is None, error=error, containment=containment(),
                         seconds=seconds)
