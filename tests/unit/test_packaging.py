"""What the wheel holds, and that it installs beside AdapterHub's `adapters`.

The four top folders install as sub-packages of one `foundry` namespace (pyproject
[tool.setuptools]): bare `adapters` is also the import name of AdapterHub's LoRA library, and
two distributions shipping one top-level name overwrite each other's files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_FOLDERS = ("domain", "adapters", "projections", "executors")
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
# scripts/setup.sh downloads these once (never into .venv): AdapterHub's library and the
# transformers it pins (4.57; foundry's ml extra wants 5).
ADAPTERHUB_DIR = Path(os.environ.get("FOUNDRY_WHEEL_CACHE",
                                     Path.home() / ".cache" / "foundry" / "wheels")) / "adapterhub"
ADAPTERHUB = (("adapters", "1.3.0"), ("transformers", "4.57.6"), ("huggingface_hub", "0.36.2"),
              ("tokenizers", "0.22.2"))


def run(*command: str | Path, cwd: Path | None = None) -> str:
    """Run a command; its stdout, or a failure that shows its stderr."""
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def source_files(suffix: str | None = None) -> list[Path]:
    return sorted(
        p for folder in TOP_FOLDERS for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
        and (suffix is None or p.suffix == suffix)
    )


def package_of(directory: Path) -> str:
    return ".".join(("foundry", *directory.relative_to(ROOT).parts))


def test_the_packages_list_names_exactly_the_folders_that_are_packages():
    on_disk = {package_of(init.parent) for init in source_files(".py")
               if init.name == "__init__.py"}
    assert sorted(SETUPTOOLS["packages"]) == sorted(on_disk), (
        "pyproject [tool.setuptools] packages must list every folder with an __init__.py "
        "(a folder left out is missing from the wheel)")


def test_every_folder_with_python_modules_is_a_package():
    loose = {str(p.parent.relative_to(ROOT)) for p in source_files(".py")
             if not (p.parent / "__init__.py").exists()}
    assert not loose, f"modules outside any package (no __init__.py): {sorted(loose)}"


def test_every_data_file_in_the_packages_is_declared_as_package_data():
    declared: dict[str, list[str]] = SETUPTOOLS.get("package-data", {})
    undeclared = []
    for path in source_files():
        if path.suffix in (".py", ".pyc"):
            continue
        # setuptools matches package-data globs against the path below the owning package.
        owner = next(p for p in path.parents if (p / "__init__.py").exists())
        relative = str(path.relative_to(owner))
        if not any(fnmatch.fnmatch(relative, glob) for glob in declared.get(package_of(owner), [])):
            undeclared.append(str(path.relative_to(ROOT)))
    assert not undeclared, f"not in [tool.setuptools.package-data]: {undeclared}"


# --- the built wheel ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """foundry's wheel, built (`pip wheel --no-deps`) from a copy of the sources, so the build's
    own files (build/, *.egg-info) never land in the working tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in TOP_FOLDERS:
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", tmp / "dist", src)
    (built,) = (tmp / "dist").glob("foundry-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_only_the_foundry_namespace_its_modules_and_its_data(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"foundry", wheel.name.split("-py")[0]
                                                 + ".dist-info"}
    assert "foundry/__init__.py" not in names  # a namespace: others may add foundry.* too
    expected = {"foundry/" + str(p.relative_to(ROOT)) for p in source_files(".py")}
    assert {n for n in names if n.endswith(".py")} == expected
    assert "foundry/executors/real/codebench/problems.json" in names


@pytest.mark.slow
def test_the_wheel_installs_beside_adapterhubs_adapters_and_both_import(
    wheel: Path, tmp_path: Path
):
    """A fresh venv gets exactly five wheels: foundry's and AdapterHub's `adapters` with the
    transformers it pins. Everything else both need (pydantic, eventsourcing, torch, ...) is
    read from .venv through a .pth line placed after the venv's own site-packages: no second
    torch, no network, and no editable foundry (a .pth line adds a folder; it does not run the
    .pth files inside it, so .venv's editable finder never loads)."""
    missing = [f"{name}=={version}" for name, version in ADAPTERHUB
               if not list(ADAPTERHUB_DIR.glob(f"{name}-{version}-*.whl"))]
    assert not missing, f"{missing} not in {ADAPTERHUB_DIR}: run scripts/setup.sh"
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    installed = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                         "['purelib'])").strip())
    (installed / "zz_dependencies_from_dot_venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", "--find-links", ADAPTERHUB_DIR, wheel,
        *(f"{name}=={version}" for name, version in ADAPTERHUB))

    probe = (
        "import json, sys, adapters, transformers\n"
        "import foundry.adapters.bootstrap as bootstrap\n"
        "from importlib.metadata import distribution\n"
        "hub = distribution('adapters')\n"
        "f = bootstrap.Foundry.open(sys.argv[1])\n"
        "listed = f.execute('data/list', {'collection': 'forge_recipes'})\n"
        "f.close()\n"
        "print(json.dumps({\n"
        "  'adapters': adapters.__file__, 'adapters_version': adapters.__version__,\n"
        "  'adapters_dist_file': str(hub.locate_file('adapters/__init__.py')),\n"
        "  'lora_config': adapters.LoRAConfig.__module__,\n"
        "  'transformers': transformers.__version__, 'bootstrap': bootstrap.__file__,\n"
        "  'listed': listed['success'],\n"
        "  'bare_names': sorted(m for m in ('domain', 'projections', 'executors')\n"
        "                       if m in sys.modules)}))\n"
    )
    out = run(python, "-c", probe, f"sqlite:///{tmp_path / 'f.db'}", cwd=tmp_path)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["adapters"] == seen["adapters_dist_file"] == str(installed / "adapters" /
                                                                 "__init__.py")
    assert (seen["adapters_version"], seen["transformers"]) == ("1.3.0", "4.57.6")
    assert seen["lora_config"].startswith("adapters.")
    assert seen["bootstrap"] == str(installed / "foundry" / "adapters" / "bootstrap.py")
    assert seen["listed"] is True  # the installed foundry works, not just imports
    assert seen["bare_names"] == []
