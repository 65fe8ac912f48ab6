"""Lineage tells what each stage produced: a quant stage's outputHash is the model it hands on
(the real executor passes it through unchanged, so the row used to show the input's hash
twice); its row now also names the GGUF files it wrote, with their hashes, in the JSON report
and in the markdown one (issue #10, item 9)."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

import pytest

from tests.conftest import ok

# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


def test_the_quant_row_shows_the_hashes_of_the_gguf_files_it_produced(
        foundry: Any, recipe_data: dict[str, Any]) -> None:
    from foundry.adapters.commands.lineage_markdown import render_markdown

    recipe = copy.deepcopy(recipe_data)
    recipe["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": "forge_recipes",
                                                   "data": recipe}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    report = ok(foundry.execute("lineage/report", {"id": run["artifactId"]}))
    [quant] = [s for s in report["runs"][0]["stages"] if s["type"] == "quant"]

    # What the run recorded for the stage: the GGUF tiers, as stored blobs.
    recorded = next(f for f in foundry.runs.get_run(UUID(run["runId"])).state["stages"].values()
                if f["type"] == "quant")["files"]
    ggufs = sorted((f["path"], f["sha256"], f["size"]) for f in recorded
                   if f["path"].endswith(".gguf"))
    assert ggufs, recorded
    assert sorted((f["path"], f["sha256"], f["size"]) for f in quant["outputFiles"]
                  if f["path"].endswith(".gguf")) == ggufs
    for path, sha256, size in ggufs:
        assert foundry.blobs.path_of(sha256.removeprefix("sha256:")).stat().st_size == size, path

    text = render_markdown(report)
    [row] = [line for line in text.splitlines() if "| quant |" in line]
    for path, sha256, _ in ggufs:
        assert f"{path} {sha256.removeprefix('sha256:')[:12]}" in row
