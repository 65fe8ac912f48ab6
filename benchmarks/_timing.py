"""Accumulated time of wrapped callables: how the benchmarks split a measured total into parts.

Shared by ``bench_forge.py`` and ``bench_recipes.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Timers:
    """Accumulated seconds and call counts of wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.enabled = True

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        return wrapper

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
