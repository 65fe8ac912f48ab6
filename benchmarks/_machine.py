"""What every benchmark prints about the machine it ran on, so figures can be compared.

Shared by ``bench_forge.py``, ``bench_recipes.py`` and ``bench_pipeline.py``: CPU model, cores
this process may use, memory, kernel, Python, the load average (with CPU pressure where the
kernel reports it), package versions and the filesystem under a path. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def nproc() -> int:
    """CPUs this process may run on (what `nproc` prints)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fs_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (from /proc/mounts)."""
    best, kind = "", "unknown"
    resolved = str(Path(path).resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1]
            if resolved.startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, f"{parts[2]} ({parts[0]} on {mnt})"
    return kind


def loadavg() -> str:
    """1/5/15-minute load averages and CPU pressure (share of the last 60 s in which some
    runnable task waited for a CPU): other work on the machine skews every figure."""
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        load += f" (cpu pressure {float(some[2].split('=')[1]):.0f}%)"
    return load


def load_1min() -> float | None:
    """The 1-minute load average as a number, or None where /proc/loadavg is missing."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """The facts common to every benchmark; each adds its own (versions, disk probes)."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "nproc": nproc(),
        "cpu": cpu_model(),
        "ram_gib": mem_total_gib(),
        "kernel": platform.release(),
        "loadavg_at_start": loadavg(),
        "python": sys.version.split()[0],
    }
