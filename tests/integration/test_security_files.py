"""Issue #17 items 4 and 7: files are written without following planted symlinks, never under
/proc or /sys, names never become paths, user files are read only when regular and small, and
the blob store refuses symlinks out of a model directory. Real stores, real fake-executor runs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.store.blobs import BlobSourceError, BlobStore
from tests.conftest import ok

R = "forge_recipes"


# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


def forged(foundry: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert result["status"] == "completed", result
    return result


def refused(result: dict[str, Any], field: str) -> str:
    assert result["success"] is False, result
    assert result["errorCode"] == "invalid_input", result
    assert field in result["error"], result
    assert "Traceback" not in json.dumps(result)
    return str(result["error"])


def test_publish_never_writes_through_a_planted_symlink(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    run = forged(foundry, recipe)
    out = tmp_path / "out"
    first = ok(foundry.execute("forge/publish", {"id": run["runId"],
                                                 "target": f"file://{tmp_path / 'first'}"}))
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in first["files"]:  # the old temp name and the final name of every file
        (out / f".{name}.partial").symlink_to(victim)
        (out / name).symlink_to(victim)

    ok(foundry.execute("forge/publish", {"id": run["runId"], "target": f"file://{out}"}))
    assert victim.read_text() == "precious"
    for name in first["files"]:
        assert (out / name).is_file() and not (out / name).is_symlink(), name
        if not name.endswith((".alloy.json", ".md")):  # those carry the new receipt
            assert (out / name).read_bytes() == (tmp_path / "first" / name).read_bytes()


def test_a_recipe_name_never_leaves_the_publish_directory(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    recipe["name"] = "../../../../" + str(tmp_path / "x" / "escaped").lstrip("/")
    run = forged(foundry, recipe)
    out = tmp_path / "pub" / "out"
    result = ok(foundry.execute("forge/publish", {"id": run["runId"], "target": f"file://{out}"}))
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.rglob("escaped.alloy.json"))
    alloys = [n for n in result["files"] if n.endswith(".alloy.json")]
    assert len(alloys) == 1 and "/" not in alloys[0] and not alloys[0].startswith(".")
    assert (out / alloys[0]).is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(result["files"])


@pytest.mark.parametrize("target", ["file:///proc/self", "file:///proc/self/cwd/x",
                                    "file:///sys/kernel", "file:///dev/shm/x"])
def test_publish_refuses_proc_sys_and_dev_as_an_envelope(
        foundry: Any, recipe: dict[str, Any], target: str) -> None:
    run = forged(foundry, recipe)
    refused(foundry.execute("forge/publish", {"id": run["runId"], "target": target}), "target")


def test_publish_to_a_symlink_pointing_into_proc_is_refused(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    run = forged(foundry, recipe)
    link = tmp_path / "innocent"
    link.symlink_to("/proc/self")
    refused(foundry.execute("forge/publish", {"id": run["runId"], "target": f"file://{link}"}),
            "target")


def test_export_alloy_replaces_a_symlinked_out_instead_of_following_it(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "recipe.alloy.json"
    out.symlink_to(victim)
    ok(foundry.execute("alloy/export", {"id": recipe_id, "out": str(out)}))
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and json.loads(out.read_text())["name"] == recipe["name"]

    missing = tmp_path / "no-such-dir" / "x.alloy.json"
    refused(foundry.execute("alloy/export", {"id": recipe_id, "out": str(missing)}), "out")
    refused(foundry.execute("alloy/export", {"id": recipe_id, "out": "/proc/self/x.json"}),
            "out")


def test_cards_out_under_proc_is_an_envelope(foundry: Any, recipe: dict[str, Any]) -> None:
    run = forged(foundry, recipe)
    refused(foundry.execute("artifact/card", {"id": run["runId"], "out": "/proc/self/cards"}),
            "out")


def test_import_alloy_refuses_devices_symlinks_to_them_and_huge_files(
        foundry: Any, tmp_path: Path) -> None:
    link = tmp_path / "zero.alloy.json"
    link.symlink_to("/dev/zero")
    big = tmp_path / "big.alloy.json"
    with big.open("wb") as fh:
        fh.truncate(9 * 1024 * 1024)  # sparse: 9 MB of zeros without writing them
    fifo = tmp_path / "fifo.alloy.json"
    os.mkfifo(fifo)
    for path, rule in (("/dev/zero", "not a regular file"), (link, "not a regular file"),
                       (fifo, "not a regular file"), (big, "limit")):
        started = time.monotonic()
        error = refused(foundry.execute("alloy/import", {"paths": [str(path)]}), "file")
        assert rule in error and time.monotonic() - started < 5, error
    # A directory import takes the same rules for each *.alloy.json inside.
    refused(foundry.execute("alloy/import", {"paths": [str(tmp_path)]}), "file")


def test_put_dir_refuses_a_file_symlink_out_of_the_model_directory(tmp_path: Path) -> None:
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").symlink_to(secret)
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(BlobSourceError, match=r"tokenizer\.json.*outside"):
        store.put_dir(model, "model")
    assert not any((tmp_path / "blobs").rglob("*")) or not [
        p for p in (tmp_path / "blobs").rglob("*") if p.is_file()
        and p.read_bytes() == b"PRIVATE KEY"]

    # Links inside the directory, and a Hugging Face snapshot's links into its blobs/, are fine.
    (model / "tokenizer.json").unlink()
    (model / "weights.bin").write_bytes(b"w")
    (model / "alias.bin").symlink_to("weights.bin")
    assert {r.path for r in store.put_dir(model, "model")} == {"config.json", "weights.bin",
                                                               "alias.bin"}
    repo = tmp_path / "hub" / "models--org--m"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc").write_text("{}")
    snap = repo / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to("../../blobs/abc")
    assert [r.path for r in store.put_dir(snap, "model")] == ["config.json"]


def test_a_base_model_dir_with_a_symlink_out_fails_the_run_naming_the_file(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    model = tmp_path / "fake-models" / "planted"  # where forge_env's fake:// models live
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "fake"}')
    (model / "model.bin").write_bytes(b"w" * 64)
    (model / "tokenizer.json").symlink_to(secret)
    recipe["source"]["baseModel"] = "fake://planted"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert result["status"] == "failed", result
    failure = foundry.runs.get_run(uuid.UUID(result["runId"])).state["failure"]
    assert failure["type"] == "BlobSourceError", failure
    assert "tokenizer.json" in failure["message"] and "outside" in failure["message"], failure
