"""Run untrusted, model-written Python under bubblewrap, and decide pass/fail outside it.

`run_candidate(code, timeout_s=..., work_dir=...)` splits `code` into the program (everything
before the trailing top-level `assert`s) and its checks. A check of the form
`assert <expr> <op> <literal>` becomes a *probe*: only `<expr>` goes into the sandbox, the child
evaluates it after the program ran and writes back `repr(value)`, and the harness (this process)
decodes that with `ast.literal_eval` and applies `<op> <literal>` itself. The expected value never
enters the sandbox, so a candidate that exits early, prints markers, rewrites the child's own
bootstrap or forges the result line still has to produce the right values: it cannot fake a pass
it did not earn. A run passes only if it has at least one probe and every probe matches; any other
trailing `assert` stays in the program (it can make a run fail, never pass).

Containment is kernel-level, set up by `bwrap` (Debian's `bubblewrap`; scripts/setup.sh installs
it); there is no fallback: without a working bwrap, `run_candidate` raises SandboxUnavailableError
instead of running model code unsandboxed. The child gets:

* **new user, PID, network, IPC, UTS and cgroup namespaces**: it runs as uid 65534 with no
  capabilities, sees only its own processes, and has no network interface but a downed loopback;
  further user namespaces are disabled;
* **a filesystem of its own**: the Python interpreter, its standard library and the shared
  libraries, all read-only; a fresh /dev and /tmp; the inputs read-only at /in; a size-capped
  tmpfs scratch dir at /work (the only writable place). No /etc, /home, /root, /proc, /usr/bin
  or repository is visible, so there is no `id` to run and no /etc/passwd to read;
* **rlimits** set by the child's bootstrap before the candidate runs, soft = hard so they cannot
  be raised: CPU seconds, address space, file size (stdout/stderr are files: capped too),
  processes, no core dumps;
* **the whole tree killed at the deadline**: bwrap runs in its own session, is SIGKILLed with its
  process group, and takes its PID namespace's init down with it (`--die-with-parent`), and the
  kernel kills everything in a PID namespace when its init dies, `setsid` grandchildren included.
  The same happens when the candidate exits normally.

What comes back is decided here: pass/fail from the probes, and an error message composed by the
harness (the failing check's own source, an exception *class name* matching an identifier
pattern); nothing the candidate prints is copied into the result.
"""

from __future__ import annotations

import ast
import functools
import json
import operator
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError

MEMORY_LIMIT_BYTES = 1 << 30
FILE_SIZE_LIMIT_BYTES = 1 << 20
SCRATCH_BYTES = 16 << 20
MAX_PROCESSES = 16
MAX_REPR_CHARS = 10_000
SANDBOX_UID = 65534
CONTAINMENT = ("bwrap(user,pid,net,ipc,uts,cgroup ns; ro fs; tmpfs scratch)+rlimits"
               + ("+seccomp(no fork/exec)" if os.uname().machine in ("x86_64", "aarch64") else "")
               + "+harness-side checks")
_RESULT_MARK = "FOUNDRY-SANDBOX-RESULT "
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# Runs inside the sandbox as the child's __main__. It holds nothing worth stealing: the expected
# values are not here, and the rlimits it sets cannot be raised again once set (soft = hard, and
# the child has no CAP_SYS_RESOURCE).
_BOOTSTRAP = r"""
import json, os, resource, sys
for _name, _value in json.loads(sys.argv[1]).items():
    resource.setrlimit(getattr(resource, _name), (_value, _value))
_filter = bytes.fromhex(sys.argv[2])
if _filter:
    import ctypes
    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    _libc = ctypes.CDLL(None, use_errno=True)
    _prog = _Prog(len(_filter) // 8, _filter)
    # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
    if (_libc.prctl(38, 1, 0, 0, 0) != 0
            or _libc.prctl(22, 2, ctypes.byref(_prog), 0, 0) != 0):
        os.write(2, b"sandbox: seccomp filter refused\n")
        os._exit(70)
    del ctypes, _Prog, _libc, _prog
with open("/in/probes.json", encoding="utf-8") as _fh:
    _probes = json.load(_fh)
with open("/in/candidate.py", encoding="utf-8") as _fh:
    _src = _fh.read()
_ns = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(_src, "candidate.py", "exec"), _ns)
except BaseException as _exc:
    _out = {"program": type(_exc).__name__}
else:
    _out = {"probes": []}
    for _expr in _probes:
        try:
            _out["probes"].append({"repr": repr(eval(_expr, _ns))[:@MAX_REPR@]})
        except BaseException as _exc:
            _out["probes"].append({"raised": type(_exc).__name__})
try:
    sys.stdout.flush()
except BaseException:
    pass
os.write(1, ("\n@MARK@" + json.dumps(_out) + "\n").encode())
os._exit(0)
""".replace("@MAX_REPR@", str(MAX_REPR_CHARS + 1)).replace("@MARK@", _RESULT_MARK)


class SandboxUnavailableError(ExecutorError):
    """bwrap is missing or cannot create namespaces here: candidate code is never run without it."""


@dataclass(frozen=True)
class SandboxResult:
    """Whether every check passed; why not (harness-composed); which containment was in force."""

    passed: bool
    error: str | None
    containment: str
    seconds: float = 0.0


_OPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}


@dataclass(frozen=True)
class Probe:
    """`assert <expr> <op> <expected>`: the child sees `expr` only."""

    expr: str
    op: Callable[[Any, Any], bool]
    expected: Any
    text: str


def _probe_of(node: ast.Assert) -> Probe | None:
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and node.msg is None):
        return None
    op = _OPS.get(type(test.ops[0]))
    try:
        expected = ast.literal_eval(test.comparators[0])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    # `is` is only well defined against the singletons; `x is 5` stays in the program.
    if op is None or (isinstance(test.ops[0], ast.Is | ast.IsNot)
                      and expected not in (True, False, None)):
        return None
    return Probe(ast.unparse(test.left), op, expected, ast.unparse(node))


def split_checks(code: str) -> tuple[str, list[Probe]]:
    """(the program the child runs, the probes the harness checks); SyntaxError if unparsable."""
    tree = ast.parse(code)
    first = len(tree.body)
    while first > 0 and isinstance(tree.body[first - 1], ast.Assert):
        first -= 1
    if first == len(tree.body):
        return code, []
    lines = code.splitlines(keepends=True)
    program = "".join(lines[: tree.body[first].lineno - 1])
    probes: list[Probe] = []
    for node in tree.body[first:]:
        assert isinstance(node, ast.Assert)
        probe = _probe_of(node)
        if probe is None:
            program += "\n" + ast.unparse(node) + "\n"
        else:
            probes.append(probe)
    return program, probes


# seccomp: no new processes and no exec (threads stay allowed), as a classic BPF program.
# The numbers are per architecture; elsewhere there is no filter and `containment` says so.
_SECCOMP_ARCH = {  # machine: (AUDIT_ARCH_*, clone, clone3, syscalls refused outright)
    "x86_64": (0xC000003E, 56, 435, (57, 58, 59, 322)),  # fork, vfork, execve, execveat
    "aarch64": (0xC00000B7, 220, 435, (221, 281)),  # execve, execveat (no fork/vfork there)
}
_CLONE_THREAD = 0x00010000
_SECCOMP_RET_KILL, _SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_filter() -> bytes:
    """The filter program, or b"" on an architecture this module has no numbers for."""
    arch = _SECCOMP_ARCH.get(os.uname().machine)
    if arch is None:
        return b""
    audit_arch, clone, clone3, refused = arch
    ld_w, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JSET|K, RET|K
    deny, allow = _SECCOMP_RET_ERRNO | _EPERM, _SECCOMP_RET_ALLOW
    prog = [_bpf(ld_w, 0, 0, 4), _bpf(jeq, 1, 0, audit_arch), _bpf(ret, 0, 0, _SECCOMP_RET_KILL),
            _bpf(ld_w, 0, 0, 0),
            # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall
            # back to clone, whose flags it can.
            _bpf(jeq, 0, 1, clone3), _bpf(ret, 0, 0, _SECCOMP_RET_ERRNO | _ENOSYS)]
    for nr in refused:
        prog += [_bpf(jeq, 0, 1, nr), _bpf(ret, 0, 0, deny)]
    prog += [_bpf(jeq, 0, 4, clone), _bpf(ld_w, 0, 0, 16),  # low word of args[0]: the flags
             _bpf(jset, 1, 0, _CLONE_THREAD), _bpf(ret, 0, 0, deny), _bpf(ret, 0, 0, allow),
             _bpf(ret, 0, 0, allow)]
    return b"".join(prog)


def _python_mounts() -> list[str]:
    """Read-only binds: the real interpreter, its stdlib + libpython, the system libraries."""
    exe = os.path.realpath(sys.executable)
    paths = {exe, "/usr/lib", "/usr/lib64"}
    for key in ("stdlib", "platstdlib"):
        paths.add(os.path.realpath(sysconfig.get_paths()[key]))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        paths.add(os.path.realpath(libdir))
    args: list[str] = []
    for path in sorted(p for p in paths if os.path.exists(p)):
        args += ["--ro-bind", path, path]
    for link in ("lib", "lib64"):  # merged /usr: /lib -> usr/lib
        if os.path.islink("/" + link):
            args += ["--symlink", os.readlink("/" + link), "/" + link]
    return args


def _bwrap_command(box: Path, rlimits: dict[str, int]) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "the code benchmark runs model-written code only inside bubblewrap, and `bwrap` is "
            "not installed: run scripts/setup.sh (it installs the Debian package bubblewrap)")
    return [
        bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
        "--die-with-parent", "--new-session", "--hostname", "sandbox",
        *_python_mounts(),
        "--dev", "/dev", "--tmpfs", "/tmp",
        "--ro-bind", str(box / "in"), "/in",
        "--size", str(SCRATCH_BYTES), "--tmpfs", "/work", "--chdir", "/work",
        "--clearenv", "--setenv", "PATH", "/nonexistent", "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONHASHSEED", "0",
        "--", os.path.realpath(sys.executable), "-I", "-S", "-B", "-c", _BOOTSTRAP,
        json.dumps(rlimits), seccomp_filter().hex(),
    ]


@functools.cache
def _bwrap_problem() -> str | None:
    """None where a trivial bwrap sandbox starts here; otherwise why not."""
    box = Path(tempfile.mkdtemp(prefix="sandbox-check-"))
    try:
        (box / "in").mkdir()
        (box / "in" / "candidate.py").write_text("", encoding="utf-8")
        (box / "in" / "probes.json").write_text("[]", encoding="utf-8")
        done = subprocess.run(_bwrap_command(box, {}), capture_output=True, timeout=30,
                              check=False)
    except SandboxUnavailableError as exc:
        return str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not be started: {exc}"
    finally:
        shutil.rmtree(box, ignore_errors=True)
    if done.returncode != 0 or _RESULT_MARK.encode() not in done.stdout:
        why = done.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"bwrap cannot create the sandbox's namespaces here (exit {done.returncode}: {why})"
    return None


def require_sandbox() -> None:
    """Raise SandboxUnavailableError unless candidate code can run sandboxed on this machine."""
    problem = _bwrap_problem()
    if problem is not None:
        raise SandboxUnavailableError(
            f"refusing to run model-written code unsandboxed: {problem}")


def containment() -> str:
    """What `run_candidate` puts around the code (raises where it cannot)."""
    require_sandbox()
    return CONTAINMENT


def _exc_name(value: object) -> str:
    text = str(value)
    return text if _IDENTIFIER.fullmatch(text) else "an exception"


def _decode(entry: object) -> tuple[bool, Any, str | None]:
    """(decoded?, value, exception name the child reported)."""
    if not isinstance(entry, dict):
        return False, None, None
    if "raised" in entry:
        return False, None, _exc_name(entry["raised"])
    text = entry.get("repr")
    if not isinstance(text, str) or len(text) > MAX_REPR_CHARS:
        return False, None, None
    try:
        return True, ast.literal_eval(text), None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None, None


def _matches(probe: Probe, value: Any) -> bool:
    try:
        return bool(probe.op(value, probe.expected))
    except Exception:  # a comparison the values do not support is a failed check
        return False


def judge(stdout: str, probes: list[Probe]) -> str | None:
    """None if the child's last result line makes every probe pass, else why not."""
    reply: Any = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            try:
                reply = json.loads(line[len(_RESULT_MARK):])
            except ValueError:
                reply = None
            break
    if not isinstance(reply, dict):
        return "the program ended without reporting its results"
    if "program" in reply:
        return f"the program raised {_exc_name(reply['program'])}"
    entries = reply.get("probes")
    if not isinstance(entries, list) or len(entries) != len(probes):
        return "the program reported a malformed result"
    for number, (probe, entry) in enumerate(zip(probes, entries, strict=True), start=1):
        decoded, value, raised = _decode(entry)
        if raised is not None:
            return f"check {number} failed: {probe.text} (raised {raised})"
        if not decoded:
            return f"check {number} failed: {probe.text} (the value is not a plain literal)"
        if not _matches(probe, value):
            return f"check {number} failed: {probe.text}"
    return None


def run_candidate(code: str, *, timeout_s: float, work_dir: Path) -> SandboxResult:
    """Run `code` under the containment above, check its trailing asserts; see the module docs."""
    require_sandbox()
    try:
        program, probes = split_checks(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        return SandboxResult(False, f"the program does not parse{where}", CONTAINMENT)
    if not probes:
        return SandboxResult(False, "no check of the form `assert <expr> <op> <literal>` at "
                             "the end of the program: nothing the harness can verify", CONTAINMENT)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    box = Path(tempfile.mkdtemp(prefix="sandbox-", dir=work_dir))
    (box / "in").mkdir()
    (box / "in" / "candidate.py").write_text(program, encoding="utf-8")
    (box / "in" / "probes.json").write_text(json.dumps([p.expr for p in probes]), "utf-8")
    rlimits = {"RLIMIT_CPU": int(timeout_s) + 1, "RLIMIT_AS": MEMORY_LIMIT_BYTES,
               "RLIMIT_FSIZE": FILE_SIZE_LIMIT_BYTES, "RLIMIT_NPROC": MAX_PROCESSES,
               "RLIMIT_CORE": 0}
    started = time.perf_counter()
    with (box / "stdout").open("wb") as out:
        proc = subprocess.Popen(_bwrap_command(box, rlimits), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # bwrap and its namespace init share this group; the init's death kills the rest.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = round(time.perf_counter() - started, 3)
    with (box / "stdout").open("rb") as fh:
        stdout = fh.read(FILE_SIZE_LIMIT_BYTES + 1).decode("utf-8", errors="replace")
    shutil.rmtree(box, ignore_errors=True)
    if rc is None:
        error: str | None = f"timeout after {timeout_s:g}s"
    elif rc < 0:
        error = f"killed by {signal.Signals(-rc).name}"
    else:
        error = judge(stdout, probes)
    return SandboxResult(passed=error is None, error=error, containment=CONTAINMENT,
                         seconds=seconds)
