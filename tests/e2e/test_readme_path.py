"""The README's whole path, run as written on a fresh home directory right after the quick
start, ends with every verify line ok (issue #14 item 4).

The commands are read from the README itself, so that the test follows the text a newcomer
follows. Two substitutions only: `scripts/demo.sh` runs `scripts/demo.py` (the script's
other half is `scripts/setup.sh`, which installs the .venv this test already runs in), and
/tmp/published becomes a directory of the test's own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HEADING = "### The whole path: forge, verify, publish, import"


def readme_path_commands() -> list[str]:
    """The bash lines of the README's whole-path block, up to the last `foundry verify`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(HEADING, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.strip().splitlines()]
    last_verify = max(i for i, line in enumerate(lines) if line.startswith("foundry verify"))
    return [line for line in lines[:last_verify + 1] if line]


def fresh_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FOUNDRY_", "XDG_")) and k not in ("HF_HOME",)}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_readme_path_on_a_fresh_home_ends_with_every_verify_line_ok(tmp_path: Path) -> None:
    home, published, log = tmp_path / "home", tmp_path / "published", tmp_path / "verify.log"
    home.mkdir()
    demo = f"{sys.executable} scripts/demo.py"
    script = ["set -euo pipefail", f"cd {ROOT}", demo]  # the quick start, then the path
    for line in readme_path_commands():
        line = line.replace("scripts/demo.sh", demo).replace("/tmp/published", str(published))
        if line.startswith("foundry verify"):
            line = f"{line} | tee -a {log}"  # pipefail keeps verify's exit status
        script.append(line)
    assert sum("foundry verify" in line for line in script) == 2, script
    assert any("keys show" in line for line in script), script
    proc = subprocess.run(["bash", "-c", "\n".join(script)], env=fresh_env(home),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    names = [re.split(r"[\s:]", line, maxsplit=1)[0] for line in lines]
    # The run verifies (alloyHash, blobs, signature), then the published files (alloyHash,
    # weights, files, card, signature): each says ok, none says none or not recorded.
    assert names.count("signature") == 2 and "weights" in names and "card" in names, lines
    for line in lines:
        assert re.match(r"^\S+\s+ok\s", line), f"not ok: {line}\n" + "\n".join(lines)
