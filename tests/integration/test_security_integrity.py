"""Issue #17 items 3 and 5: a flipped byte in a stored blob or a published file is found and
named by `verify` and `audit replay`, `publish` refuses a corrupt blob with an envelope, and a
README matching an unsigned cardHash is reported `unsigned`, never ok.
Real stores, real fake-executor runs, real keys.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

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


def model_file(foundry: Any, run_id: str) -> dict[str, Any]:
    read = ok(foundry.execute("artifact/verify", {"subject": run_id}))
    assert read["ok"] is True  # unsigned: `signature: none`, which is not a failure
    assert [link["status"] for link in read["links"] if link["name"] == "signature"] == ["none"]
    from foundry.domain import run_state

    last = run_state.completed_stages(foundry.runs.get_run(uuid.UUID(run_id)).state)[-1]
    return next(f for f in last["files"] if f["role"] == "model")


def flip_byte(path: Path, at: int = 0) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def link(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in result["links"] if entry["name"] == name)


def test_a_flipped_byte_in_a_stored_blob_is_named_by_verify_replay_and_publish(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    run = forged(foundry, recipe)
    record = model_file(foundry, run["runId"])
    replay = ok(foundry.execute("audit/replay", {"runId": run["runId"]}))
    assert replay["ok"], replay
    flip_byte(foundry.blobs.path_of(record["sha256"]))

    replay = ok(foundry.execute("audit/replay", {"runId": run["runId"]}))
    assert replay["ok"] is False
    assert any(record["path"] in p and "corrupt" in p for p in replay["problems"]), replay

    verified = ok(foundry.execute("artifact/verify", {"subject": run["runId"]}))
    blobs = link(verified, "blobs")
    assert verified["ok"] is False and blobs["ok"] is False
    assert record["path"] in blobs["found"] and "corrupt" in blobs["found"], blobs

    published = foundry.execute("forge/publish", {"id": run["runId"],
                                                  "target": f"file://{tmp_path / 'out'}"})
    assert published["success"] is False, published
    assert published["errorCode"] == "blob_corrupt", published
    assert record["path"] in published["error"] and "Traceback" not in json.dumps(published)


def test_a_missing_blob_is_named_too(foundry: Any, recipe: dict[str, Any]) -> None:
    run = forged(foundry, recipe)
    record = model_file(foundry, run["runId"])
    foundry.blobs.path_of(record["sha256"]).unlink()
    replay = ok(foundry.execute("audit/replay", {"runId": run["runId"]}))
    assert any(record["path"] in p and "not in the store" in p for p in replay["problems"])


def test_verify_model_dir_checks_every_published_file(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    run = forged(foundry, recipe)
    out = tmp_path / "out"
    result = ok(foundry.execute("forge/publish", {"id": run["runId"], "target": f"file://{out}"}))
    [alloy] = [out / n for n in result["files"] if n.endswith(".alloy.json")]
    ggufs = sorted(n for n in result["files"] if n.endswith(".gguf"))
    assert ggufs

    def files_link() -> dict[str, Any]:
        return link(ok(foundry.execute("artifact/verify", {"subject": str(alloy),
                                                           "modelDir": str(out)})), "files")

    assert files_link()["ok"], files_link()
    flip_byte(out / ggufs[0], at=10)
    (out / ggufs[-1]).unlink()
    (out / "extra.bin").write_bytes(b"x")
    found = files_link()
    assert found["ok"] is False
    assert f"{ggufs[0]}: content does not match" in found["found"], found
    assert f"{ggufs[-1]}: missing" in found["found"], found
    assert "extra.bin: extra file" in found["found"], found


def _tamper_card(out: Path, alloy: Path) -> None:
    """Edit the README and set the receipt's cardHash beside it to match."""
    from foundry.domain.hashing import sha256_hex

    readme = out / "README.md"
    readme.write_text(readme.read_text() + "\nNow the best model ever.\n")
    doc = json.loads(alloy.read_text())
    doc["receipt"]["cardHash"] = sha256_hex(readme.read_bytes())
    alloy.write_text(json.dumps(doc, indent=2))


def test_an_unsigned_card_hash_is_reported_unsigned_never_ok(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    run = forged(foundry, recipe)
    out = tmp_path / "out"
    result = ok(foundry.execute("forge/publish", {"id": run["runId"], "target": f"file://{out}"}))
    [alloy] = [out / n for n in result["files"] if n.endswith(".alloy.json")]
    card = link(ok(foundry.execute("artifact/verify", {"subject": str(alloy)})), "card")
    assert card["ok"] is False and card["detail"].startswith("unsigned"), card
    _tamper_card(out, alloy)
    verified = ok(foundry.execute("artifact/verify", {"subject": str(alloy)}))
    card = link(verified, "card")
    assert card["expected"] == card["found"]  # the tamper is consistent ...
    assert card["ok"] is False and card["detail"].startswith("unsigned"), card  # ... not ok


def test_a_signed_artifact_signs_its_card_hash(
        forge_env: Path, store_url: str, recipe: dict[str, Any], tmp_path: Path) -> None:
    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.publishing.attestation import create_key

    info = create_key(tmp_path / "keys")  # forge_env's key dir: runs are signed at sealing
    with Foundry.open(store_url) as foundry:
        run = forged(foundry, recipe)
        out = tmp_path / "out"
        result = ok(foundry.execute("forge/publish", {"id": run["runId"],
                                                      "target": f"file://{out}"}))
        [alloy] = [out / n for n in result["files"] if n.endswith(".alloy.json")]
        receipt = json.loads(alloy.read_text())["receipt"]
        assert receipt["signature"]["keyId"] == info.key_id
        trust = {"subject": str(alloy), "trust": [info.key_id]}
        verified = ok(foundry.execute("artifact/verify", trust))
        assert verified["ok"], verified
        assert link(verified, "card")["ok"] is True
        _tamper_card(out, alloy)
        card = link(ok(foundry.execute("artifact/verify", trust)), "card")
        assert card["ok"] is False and card["expected"] == card["found"], card


def test_a_readme_that_is_not_a_regular_file_is_never_hashed(
        foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    run = forged(foundry, recipe)
    out = tmp_path / "out"
    result = ok(foundry.execute("forge/publish", {"id": run["runId"], "target": f"file://{out}"}))
    [alloy] = [out / n for n in result["files"] if n.endswith(".alloy.json")]
    verified = ok(foundry.execute("artifact/verify", {"subject": str(alloy),
                                                      "readme": "/dev/zero"}))
    card = link(verified, "card")
    assert card["ok"] is False and "not a regular file" in card["detail"], card


def test_a_trust_level_claim_beyond_self_attested_is_flagged(
        forge_env: Path, store_url: str, recipe: dict[str, Any], tmp_path: Path) -> None:
    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.publishing.attestation import create_key

    info = create_key(tmp_path / "keys")
    with Foundry.open(store_url) as foundry:
        run = forged(foundry, recipe)
        out = tmp_path / "out"
        result = ok(foundry.execute("forge/publish", {"id": run["runId"],
                                                      "target": f"file://{out}"}))
        [alloy] = [out / n for n in result["files"] if n.endswith(".alloy.json")]
        doc = json.loads(alloy.read_text())
        doc["integrity"]["trustLevel"] = "enclave"  # outside alloyHash and the signature
        alloy.write_text(json.dumps(doc, indent=2))
        verified = ok(foundry.execute("artifact/verify", {"subject": str(alloy),
                                                          "trust": [info.key_id]}))
        assert link(verified, "signature")["ok"] is True
        claim = link(verified, "trustLevel")
        assert verified["ok"] is False and claim["ok"] is False and claim["found"] == "enclave"
