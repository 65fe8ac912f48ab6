"""Issue #16 item 1: Foundry's own artifact files round-trip and verify.

forge (fake executors) -> publish to file:// -> import the published .alloy.json into a
second store -> verify -> the two stores hold the same artifact, field by field. The first
store runs on SQLite and PostgreSQL; the second is a fresh SQLite file.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import leaves, ok, read

A = "forge_artifacts"
R = "forge_recipes"


@pytest.fixture
def second(tmp_path: Path, forge_env: Path) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(f"sqlite:///{tmp_path / 'second.db'}") as f:
        yield f



def forge_and_publish(foundry: Any, recipe_data: dict[str, Any], out: Path) -> dict[str, Any]:
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert run["status"] == "completed", run
    ok(foundry.execute("forge/publish", {"id": run["runId"], "target": out.as_uri()}))
    return {**run, "recipeId": recipe_id}


def test_forge_publish_import_elsewhere_verify_gives_the_same_artifact(
        forge_env, foundry, second, recipe_data, tmp_path):
    from foundry.adapters.publishing.attestation import create_key

    create_key(tmp_path / "keys")  # the forge_env key dir: the run is signed at sealing
    out = tmp_path / "published"
    run = forge_and_publish(foundry, recipe_data, out)
    [published] = sorted(out.glob("*.alloy.json"))
    on_disk = json.loads(published.read_text(encoding="utf-8"))

    # The published file verifies as it lies there (its card recorded by the receipt).
    verified = ok(second.execute("artifact/verify", {"subject": str(published)}))
    assert verified["ok"], verified
    assert {link["name"] for link in verified["links"]} == {"alloyHash", "card", "signature",
                                                            "trustLevel"}

    imported = ok(second.execute("alloy/import", {"paths": [str(published)]}))
    [report] = imported["imported"]
    assert report["status"] == "imported", report
    assert report["runId"] == run["runId"] and report["recipeId"] == run["recipeId"]

    # Verified again from the second store, by the run id: the hash links hold there too.
    again = ok(second.execute("artifact/verify", {"subject": report["runId"]}))
    assert next(link for link in again["links"] if link["name"] == "alloyHash")["ok"], again

    # The same artifact, field by field, in both stores.
    first = read(foundry, A, run["artifactId"])
    copy_ = read(second, A, run["artifactId"])
    # (The receipt is outside the hash: publishing may add to the file's receipt what the
    # store's Published event does not keep, e.g. a receipt signature; the file's receipt
    # must hold at least every field of the store's.)
    def unreceipted(artifact: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in artifact.items() if k != "receipt"}

    assert sorted(leaves(unreceipted(copy_))) == sorted(leaves(unreceipted(first)))
    assert unreceipted(copy_) == unreceipted(first)
    assert {k: v for k, v in unreceipted(first).items() if k != "status"} == unreceipted(on_disk)
    assert copy_["receipt"] == on_disk["receipt"]
    assert {**on_disk["receipt"], **first["receipt"]} == on_disk["receipt"]
    for field in ("id", "recipeId", "recipeVersion", "recipeName", "hardwareNode",
                  "provenance", "alloyHash", "integrity"):
        assert copy_[field] == on_disk[field], field

    # Export from the second store writes exactly what was imported; it verifies too.
    exported = ok(second.execute("alloy/export", {"id": report["runId"]}))["alloy"]
    assert exported == on_disk
    # The recipe came along under its own id, and is listed once.
    recipe = read(second, R, run["recipeId"])
    assert recipe["name"] == on_disk["recipeName"]
    assert recipe["version"] == on_disk["recipeVersion"]

    # The same file again writes nothing and answers the same.
    assert ok(second.execute("alloy/import", {"paths": [str(published)]}))["imported"][0][
        "runId"] == report["runId"]
    assert ok(second.execute("data/list", {"collection": A}))["count"] == 1


def test_the_export_of_a_forged_run_verifies_as_written(forge_env, foundry, recipe_data,
                                                        tmp_path):
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    file = tmp_path / "export.alloy.json"
    ok(foundry.execute("alloy/export", {"id": run["runId"], "out": str(file)}))
    exported = json.loads(file.read_text(encoding="utf-8"))
    # Every field the hash covers is in the file: id, recipe identity, node, provenance.
    for field in ("id", "recipeId", "recipeVersion", "recipeName", "hardwareNode",
                  "provenance"):
        assert field in exported, field
    verified = ok(foundry.execute("artifact/verify", {"subject": str(file)}))
    alloy = next(link for link in verified["links"] if link["name"] == "alloyHash")
    assert alloy["ok"] and alloy["found"] == run["alloyHash"], verified


def test_an_artifact_file_changed_after_sealing_is_refused(forge_env, foundry, second,
                                                          recipe_data, tmp_path):
    out = tmp_path / "published"
    forge_and_publish(foundry, recipe_data, out)
    [published] = sorted(out.glob("*.alloy.json"))
    data = json.loads(published.read_text(encoding="utf-8"))
    data["results"]["finalPerplexity"] = 1.0  # a better number than the run measured
    tampered = tmp_path / "tampered.alloy.json"
    tampered.write_text(json.dumps(data), encoding="utf-8")
    result = second.execute("alloy/import", {"paths": [str(tampered)]})
    assert not result["success"]
    [report] = result["imported"]
    assert report["status"] == "refused" and "alloyHash" in report["error"], report
    assert ok(second.execute("data/list", {"collection": R}))["count"] == 0
    assert ok(second.execute("data/list", {"collection": A}))["count"] == 0


def test_verify_reads_only_the_card_the_receipt_recorded(forge_env, foundry, recipe_data,
                                                        tmp_path):
    """#16 item 10: a README.md that merely sits next to an artifact file is not its card."""
    from foundry.adapters.publishing.attestation import create_key

    create_key(tmp_path / "keys")  # signed, so the card link can pass where it should
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project, not a model card\n")
    exported = project / "model.alloy.json"
    ok(foundry.execute("alloy/export", {"id": run["runId"], "out": str(exported)}))
    links = ok(foundry.execute("artifact/verify", {"subject": str(exported)}))["links"]
    assert "card" not in {link["name"] for link in links}, links

    # Published: the card beside it is the one the receipt hashed; swapped, it fails.
    out = tmp_path / "published"
    ok(foundry.execute("forge/publish", {"id": run["runId"], "target": out.as_uri()}))
    [published] = sorted(out.glob("*.alloy.json"))
    card = next(link for link in ok(foundry.execute(
        "artifact/verify", {"subject": str(published)}))["links"] if link["name"] == "card")
    assert card["ok"], card
    (out / "README.md").write_text("# a stray card\n")
    card = next(link for link in ok(foundry.execute(
        "artifact/verify", {"subject": str(published)}))["links"] if link["name"] == "card")
    assert not card["ok"], card
