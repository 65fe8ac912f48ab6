"""The layering rules, checked mechanically: the domain has no I/O, logging or ML imports,
and `data/*` commands never pull torch into the process."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_DOMAIN = (
    "foundry.adapters", "foundry.projections", "foundry.executors", "eventsourcing.application",
    "eventsourcing.persistence", "eventsourcing.sqlite", "eventsourcing.postgres",
    "eventsourcing.projection", "psycopg", "structlog", "torch", "transformers", "llama_cpp",
    "huggingface_hub", "logging", "sqlite3", "subprocess", "socket",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_domain_imports_nothing_that_does_io_logs_or_runs_models():
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "domain").rglob("*.py")
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_DOMAIN)
    }
    assert not offenders, sorted(offenders)


def test_torch_is_imported_only_inside_executors():
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for package in ("domain", "adapters", "projections")
        for path in (ROOT / package).rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in ("torch", "transformers", "peft", "llama_cpp", "gguf")
    }
    assert not offenders, sorted(offenders)


def test_the_data_command_path_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from foundry.adapters.bootstrap import Foundry\n"
        f"f = Foundry.open('sqlite:///{tmp_path}/f.db')\n"
        "r = f.execute('data/list', {'collection': 'forge_recipes'})\n"
        "assert r['success'], r\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'peft', 'llama_cpp'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_import_linter_graph_holds_every_module_on_disk():
    """The layer contracts (pyproject [tool.importlinter], run by scripts/lint.sh) are only as
    good as the graph they read: a root that grimp could not resolve through the editable
    finder, or a folder left out, would let every contract pass on a graph without it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    graph = grimp.build_graph(*config["root_packages"], cache_dir=None)
    on_disk = {
        ".".join(("foundry", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(
            ".__init__")
        for package in ("domain", "adapters", "projections", "executors")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {m for m in graph.modules if m.startswith("foundry.")} == on_disk
