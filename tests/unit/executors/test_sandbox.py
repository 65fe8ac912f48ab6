"""The eval sandbox against the attacks of issue #17, run for real under bubblewrap.

Each attack first tries the old escape (reaching the harness through `sys.modules['__main__']`
and switching its checks off), then does the damage; the candidate reports what happened
through a check, so a test fails both when the attack works and when it never ran.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from foundry.executors.real import sandbox

_DISARM = """
import sys
_main = sys.modules['__main__']
for _name in ('_busy', '_read_roots'):
    try:
        getattr(_main, _name).append(1) if _name == '_busy' else _main._read_roots.append('/')
    except Exception:
        pass
"""


def _run(code: str, tmp_path: Path, timeout_s: float = 5.0) -> sandbox.SandboxResult:
    return sandbox.run_candidate(code, timeout_s=timeout_s, work_dir=tmp_path / "work")


def test_a_disarmed_candidate_still_cannot_write_outside_its_scratch_dir(tmp_path: Path) -> None:
    target = tmp_path / "outside" / "escaped.txt"
    target.parent.mkdir()
    code = _DISARM + f"""
def escape():
    try:
        with open({str(target)!r}, 'w') as fh:
            fh.write('x')
        return 'wrote'
    except OSError:
        return 'blocked'
assert escape() == 'blocked'
"""
    result = _run(code, tmp_path)
    assert not target.exists()
    assert result.passed, result.error


def test_a_disarmed_candidate_cannot_run_id(tmp_path: Path) -> None:
    code = _DISARM + """
import subprocess, sys
def run_id():
    for argv in (['id'], ['/usr/bin/id'], ['/bin/id'], [sys.executable, '-c', 'print("uid=")']):
        try:
            done = subprocess.run(argv, capture_output=True, timeout=2)
        except Exception:
            continue
        if done.returncode == 0 and b'uid=' in done.stdout:
            return 'ran'
    return 'blocked'
assert run_id() == 'blocked'
"""
    result = _run(code, tmp_path)
    assert result.passed, result.error


def test_etc_passwd_cannot_be_read_back_through_the_result(tmp_path: Path) -> None:
    code = _DISARM + """
def steal():
    try:
        with open('/etc/passwd') as fh:
            return fh.read()
    except OSError:
        return ''
stolen = steal()
print(stolen)
import sys
print(stolen, file=sys.stderr)
raise RuntimeError(stolen.replace('\\n', ' | ') or 'root:x:0:0 nothing to steal')
assert len(stolen) == 0
"""
    result = _run(code, tmp_path)
    assert not result.passed and result.error is not None
    assert "root:" not in result.error, result.error
    assert result.error == "the program raised RuntimeError"
    no_file = _run(_DISARM + "import os\nassert os.path.exists('/etc/passwd') is False\n",
                   tmp_path)
    assert no_file.passed, no_file.error


def test_a_candidate_value_is_never_echoed_into_the_error(tmp_path: Path) -> None:
    result = _run("def f():\n    return 'SECRET-' + 'x' * 5\nassert f() == 'other'\n", tmp_path)
    assert result.error == "check 1 failed: assert f() == 'other'"
    raised = _run("class Root_x_0_0(Exception):\n    pass\n"
                  "def f():\n    raise Root_x_0_0('SECRET')\nassert f() == 1\n", tmp_path)
    assert raised.error is not None and "SECRET" not in raised.error


def _sandbox_processes() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"\x00-I\x00-S\x00-B\x00" in cmdline:
                found.add(int(entry.name))
    return found


def test_a_setsid_grandchild_does_not_outlive_the_deadline(tmp_path: Path) -> None:
    before = _sandbox_processes()
    code = _DISARM + """
import os, time
def spawn():
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            while True:
                time.sleep(0.05)
        os._exit(0)
    time.sleep(60)
spawn()
assert 1 == 1
"""
    started = time.monotonic()
    result = _run(code, tmp_path, timeout_s=1.0)
    assert not result.passed and result.error == "timeout after 1s"
    assert time.monotonic() - started < 5
    time.sleep(0.5)
    survivors = _sandbox_processes() - before
    for pid in survivors:  # do not leave them running if the test fails
        os.kill(pid, 9)
    assert not survivors


def test_printing_a_marker_then_exiting_zero_does_not_fake_a_pass(tmp_path: Path) -> None:
    # A wrong add() that prints the old nonce, forges a result line with every marker it can
    # find, and exits 0 before the checks.
    code = """
import json, os, sys
main = sys.modules['__main__']
for name in ('_nonce', '_RESULT_MARK'):
    print(getattr(main, name, ''))
for mark in ('FOUNDRY-SANDBOX-RESULT ', ''):
    try:
        n = len(json.load(open('/in/probes.json')))
    except OSError:
        n = 3
    for forged in ('True', '1', '3'):
        print(mark + json.dumps({'probes': [{'repr': forged}] * n}))
sys.stdout.flush()
def add(a, b):
    return 0
os._exit(0)
assert add(1, 2) == 3
assert add(-4, 4) == 0
"""
    result = _run(code, tmp_path)
    assert not result.passed
    assert result.error is not None


def test_sys_exit_before_the_checks_is_not_a_pass(tmp_path: Path) -> None:
    result = _run("import sys\nsys.exit(0)\nassert 1 == 1\n", tmp_path)
    assert not result.passed and result.error == "the program raised SystemExit"


def test_a_program_without_checkable_asserts_never_passes(tmp_path: Path) -> None:
    result = _run("x = 1\nassert x\n", tmp_path)
    assert not result.passed and result.error is not None and "nothing" in result.error


def test_no_network_even_to_the_host_loopback(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        code = _DISARM + f"""
import socket
def connect():
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
        return 'connected'
    except OSError:
        return 'blocked'
assert connect() == 'blocked'
"""
        result = _run(code, tmp_path)
        assert result.passed, result.error
        with pytest.raises(TimeoutError):
            server.accept()


def test_rlimits_cap_processes_memory_and_file_size(tmp_path: Path) -> None:
    code = f"""
import os
def fork_many():
    pids = []
    try:
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(5)
                os._exit(0)
            pids.append(pid)
    except OSError:
        pass
    return len(pids)
def allocate():
    try:
        block = bytearray(2 << 30)
        return 'allocated'
    except MemoryError:
        return 'refused'
def write_big():
    try:
        with open('big.bin', 'wb') as fh:
            fh.write(b'x' * (2 << 20))
        return 'wrote'
    except OSError:
        return 'refused'
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
assert fork_many() < {sandbox.MAX_PROCESSES}
assert allocate() == 'refused'
assert write_big() == 'refused'
"""
    result = _run(code, tmp_path, timeout_s=10.0)
    assert result.passed, result.error


def test_the_scratch_dir_is_writable_and_private(tmp_path: Path) -> None:
    code = "open('ok.txt', 'w').write('x')\nassert open('ok.txt').read() == 'x'\n"
    assert _run(code, tmp_path).passed
    assert not list((tmp_path / "work").rglob("ok.txt"))  # a tmpfs inside the sandbox


def test_evals_refuse_to_run_unsandboxed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox._bwrap_problem.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without bwrap on its PATH
    try:
        with pytest.raises(sandbox.SandboxUnavailableError, match=r"bubblewrap.*setup\.sh"):
            _run("assert 1 == 1\n", tmp_path)
    finally:
        sandbox._bwrap_problem.cache_clear()


def test_checks_are_split_from_the_program_and_judged_here() -> None:
    program, probes = sandbox.split_checks(
        "def f(x):\n    return x\n\nassert f(1) == 1\nassert f(True) is True\nassert f(2)\n")
    assert program.startswith("def f(x):") and "assert f(2)" in program
    assert [p.expr for p in probes] == ["f(1)", "f(True)"]
    assert [p.expected for p in probes] == [1, True]
    assert sandbox.judge('FOUNDRY-SANDBOX-RESULT {"probes": [{"repr": "1"}, {"repr": "True"}]}',
                        probes) is None
    assert sandbox.judge('FOUNDRY-SANDBOX-RESULT {"probes": [{"repr": "1"}, {"repr": "1"}]}',
                        probes) == "check 2 failed: assert f(True) is True"
    assert sandbox.judge("", probes) == "the program ended without reporting its results"
