"""scripts/demo.py as a module, for the benchmarks that build the demo's inputs (the tiny
Llama, its corpus): scripts/ is no package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("foundry_demo", ROOT / "scripts" / "demo.py")
    if spec is None or spec.loader is None:
        raise SystemExit("cannot load scripts/demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
