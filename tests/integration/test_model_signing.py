"""OpenSSF model signing and SLSA provenance (issue #14 item 4): a run forged and published
with a local key verifies with `model_signing`'s own verifier (an outside tool accepts what
we sign), fails it after one weight byte changes, and `foundry verify --model-dir` checks the
signature and the in-toto statement, which names the recipe hash."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ok

pytest.importorskip("model_signing")  # the `signing` extra (scripts/setup.sh installs it)

R = "forge_recipes"


# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


@pytest.fixture
def published(foundry: Any, forge_env: Path, recipe_data: dict[str, Any],
              tmp_path: Path) -> tuple[dict[str, Any], Path]:
    from foundry.adapters.publishing.attestation import create_key

    create_key(tmp_path / "keys")  # forge_env's FOUNDRY_KEYS_DIR: the run is signed at seal
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert run["status"] == "completed", run
    out = tmp_path / "published"
    result = ok(foundry.execute("forge/publish", {"id": run["runId"],
                                                  "target": f"file://{out}"}))
    assert {"model.sig", "provenance.intoto.json"} <= set(result["files"]), result
    return run, out


def weight_file(folder: Path) -> Path:
    return next(p for p in sorted(folder.iterdir())
                if p.suffix in (".safetensors", ".gguf", ".bin") and p.is_file())


def flip(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_model_signings_own_verifier_accepts_our_signature_and_refuses_a_changed_byte(
        published: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    from model_signing import verifying

    _, folder = published
    public = tmp_path / "keys" / "signing-key.pub.pem"

    def verify() -> None:  # the library's own call, nothing of ours configured
        verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
            folder, folder / "model.sig")

    verify()
    flip(weight_file(folder))
    with pytest.raises(ValueError, match="Signature mismatch"):
        verify()


def test_foundry_verify_checks_the_model_signature_and_the_provenance_statement(
        foundry: Any, published: tuple[dict[str, Any], Path]) -> None:
    run, folder = published
    [alloy] = folder.glob("*.alloy.json")
    verified = ok(foundry.execute("artifact/verify", {"subject": str(alloy),
                                                      "modelDir": str(folder)}))
    status = {link["name"]: link["status"] for link in verified["links"]}
    assert verified["ok"], verified
    assert status["modelSig"] == "ok" and status["provenance"] == "ok", status

    statement = json.loads((folder / "provenance.intoto.json").read_text())
    state = foundry.runs.get_run(__import__("uuid").UUID(run["runId"])).state
    recipe = statement["predicate"]["buildDefinition"]["externalParameters"]["recipe"]
    assert recipe["hash"] == state["recipeHash"] and recipe["id"] == state["recipeId"]
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == run["runId"]
    deps = {d["name"] for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert "baseModel" in deps and any(d.startswith("tool:") for d in deps), deps

    flip(weight_file(folder))
    broken = ok(foundry.execute("artifact/verify", {"subject": str(alloy),
                                                    "modelDir": str(folder)}))
    status = {link["name"]: link["status"] for link in broken["links"]}
    assert not broken["ok"]
    assert status["modelSig"] == "BROKEN" and status["provenance"] == "BROKEN", status
