"""Self-attestation: local keys, the signed payload, the integrity block, and each link that
`verify` checks breaking on exactly the tampering it is about."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from foundry.adapters.publishing import attestation
from foundry.adapters.publishing.attestation import (
    LEGACY_TRUST,
    TRUST_SIGNATURE,
    Link,
    build_payload,
    code_attestation,
    create_key,
    load_key,
    sign_artifact,
    verify,
)
from foundry.adapters.settings import Settings
from foundry.adapters.store.blobs import hash_dir
from foundry.domain.artifact_builder import alloy_hash
from foundry.domain.hashing import canonical_json, content_hash
from foundry.domain.values.artifact import Integrity

ATTESTED_AT = "2026-05-01T12:00:00+00:00"
HEX64 = re.compile(r"sha256:[0-9a-f]{64}")


def sample_artifact() -> dict[str, Any]:
    artifact: dict[str, Any] = {
        "id": "9b0e7c1e-3a52-5c4e-9d1f-3f4f1b1c2d3e",
        "recipeId": "qwen-tiny-prune",
        "recipeVersion": "1.0.0",
        "recipeName": "Tiny prune",
        "license": "apache-2.0",
        "source": {"baseModel": "tiny/base", "architecture": "qwen2"},
        "calibrationCorpus": {"name": "code-mix", "contentHash": "sha256:" + "c" * 64,
                              "sizeBytes": 1024, "sourceUrl": "https://example.org/code-mix"},
        "stages": [{"type": "prune", "level": 0.2}, {"type": "eval"}],
        "forgedAt": "2026-05-01T11:00:00+00:00",
        "hardwareNode": "cpu@local",
        "durationMinutes": 3.5,
        "results": {
            "baselinePerplexity": 12.5, "finalPerplexity": 11.75, "improvementPct": 6.0,
            "benchmarks": [{"name": "mmlu", "score": 41.5}, {"name": "humaneval", "score": 30.0}],
            "samples": [],
        },
        "provenance": {"runId": "run-1", "stages": [{"index": 0, "type": "prune",
                                                     "outputHash": "sha256:" + "a" * 64}]},
    }
    artifact["alloyHash"] = alloy_hash(artifact)
    return artifact


def broken(links: list[Link]) -> set[str]:
    return {link.name for link in links if not link.ok}


@pytest.fixture
def key_a(tmp_path: Path) -> tuple[Any, attestation.KeyInfo]:
    create_key(tmp_path / "keys-a")
    loaded = load_key(tmp_path / "keys-a")
    assert loaded is not None
    return loaded


@pytest.fixture
def key_b(tmp_path: Path) -> tuple[Any, attestation.KeyInfo]:
    create_key(tmp_path / "keys-b")
    loaded = load_key(tmp_path / "keys-b")
    assert loaded is not None
    return loaded


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_bytes(b'{"hidden": 64}')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (root / "sub" / "tokenizer.json").write_bytes(b'{"vocab": {}}')
    return root


@pytest.fixture
def signed(tmp_path: Path, key_a, model_dir: Path) -> tuple[dict[str, Any], Path]:
    """A signed artifact, then published with a README (the receipt is outside every hash)."""
    artifact = sample_artifact()
    private, info = key_a
    artifact["integrity"] = sign_artifact(artifact, model_dir=model_dir, private_key=private,
                                          key_info=info, attested_at=ATTESTED_AT)
    readme = tmp_path / "README.md"
    readme.write_text("# Tiny prune\n\nmmlu 41.5\n")
    artifact["receipt"] = {"cardHash": "sha256:" + hashlib.sha256(readme.read_bytes()).hexdigest(),
                           "alloyHash": artifact["alloyHash"]}
    artifact["receipt"]["signature"] = attestation.sign_receipt(artifact["receipt"], private, info)
    return artifact, readme


def test_the_private_key_file_is_mode_0600_and_a_second_create_refuses_to_overwrite_it(tmp_path):
    info = create_key(tmp_path)
    key_file = tmp_path / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "signing-key.pub.pem").read_text() == info.public_key_pem
    before = key_file.read_bytes()
    with pytest.raises(FileExistsError):
        create_key(tmp_path)
    assert key_file.read_bytes() == before
    replaced = create_key(tmp_path, overwrite=True)
    assert replaced.key_id != info.key_id
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_key_id_is_stable_and_is_the_sha256_of_the_der_public_key(tmp_path):
    info = create_key(tmp_path)
    first, second = load_key(tmp_path), load_key(tmp_path)
    assert first is not None and second is not None
    assert info.key_id == first[1].key_id == second[1].key_id
    der = first[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert info.key_id == "sha256:" + hashlib.sha256(der).hexdigest()


def test_loading_from_a_directory_without_a_key_gives_none(tmp_path):
    assert load_key(tmp_path / "nothing-here") is None


def test_a_passphrase_encrypts_the_private_key(tmp_path):
    info = create_key(tmp_path, passphrase="correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "signing-key.pem").read_bytes()
    loaded = load_key(tmp_path, "correct horse")
    assert loaded is not None and loaded[1].key_id == info.key_id
    with pytest.raises(TypeError):
        load_key(tmp_path)
    with pytest.raises(ValueError, match="Incorrect password"):
        load_key(tmp_path, "wrong horse")


def test_the_key_settings_are_read_once_from_the_environment(tmp_path):
    keys = Settings.from_env({"FOUNDRY_KEYS_DIR": str(tmp_path / "elsewhere"),
                              "FOUNDRY_KEY_PASSPHRASE": "correct horse"}).keys
    assert keys.dir == tmp_path / "elsewhere" and keys.passphrase == "correct horse"
    assert "correct horse" not in repr(keys)  # a logged Settings never shows the secret
    default = Settings.from_env({}).keys
    assert default.dir.name == "keys" and "foundry" in str(default.dir)
    assert default.passphrase is None


def test_a_signed_artifact_verifies_on_every_link(signed, model_dir):
    artifact, readme = signed
    links = verify(artifact, model_dir=model_dir, readme=readme)
    assert [link.name for link in links] == ["alloyHash", "weights", "card", "signature",
                                             "trustLevel"]
    assert broken(links) == set(), links


def test_the_integrity_block_has_the_section_5_fields_and_fits_the_domain_model(signed, key_a,
                                                                               model_dir):
    integrity = signed[0]["integrity"]
    assert integrity["trustLevel"] == "self-attested"
    assert integrity["modelHash"] == hash_dir(model_dir)
    assert integrity["alloyHash"] == signed[0]["alloyHash"]
    assert integrity["datasets"] == [{"name": "code-mix", "hash": "sha256:" + "c" * 64,
                                      "source": "https://example.org/code-mix"}]
    assert integrity["signature"]["keyId"] == key_a[1].key_id
    assert integrity["signature"]["algorithm"] == "ES256"
    Integrity.model_validate(integrity)


def test_the_signature_value_is_a_raw_64_byte_r_s_in_unpadded_base64url(signed):
    value = signed[0]["integrity"]["signature"]["value"]
    assert "=" not in value and "+" not in value and "/" not in value
    assert len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == 64


def test_one_changed_byte_in_a_weight_file_breaks_only_the_weights_link(signed, model_dir):
    artifact, readme = signed
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    assert broken(verify(artifact, model_dir=model_dir, readme=readme)) == {"weights"}


def test_an_edited_readme_breaks_only_the_card_link(signed, model_dir):
    artifact, readme = signed
    readme.write_text(readme.read_text() + "Now the best model ever.\n")
    assert broken(verify(artifact, model_dir=model_dir, readme=readme)) == {"card"}


@pytest.mark.parametrize(("field", "value"), [("finalPerplexity", 9.0), ("benchmarks", None)])
def test_an_edited_results_value_breaks_the_alloy_hash_and_signature_links(
    signed, model_dir, field, value
):
    artifact, readme = signed
    if field == "benchmarks":
        artifact["results"]["benchmarks"][0]["score"] = 99.9
    else:
        artifact["results"][field] = value
    links = verify(artifact, model_dir=model_dir, readme=readme)
    assert broken(links) == {"alloyHash", "signature", "card"}  # the card is proven no more


def test_a_signature_by_another_key_under_the_artifacts_key_id_is_broken(signed, key_a, key_b,
                                                                          model_dir):
    artifact, readme = signed
    private_b, info_b = key_b
    forged = sign_artifact(artifact, model_dir=model_dir, private_key=private_b, key_info=info_b,
                           attested_at=ATTESTED_AT)
    forged["signature"]["keyId"] = key_a[1].key_id
    artifact["integrity"] = forged
    links = verify(artifact, model_dir=model_dir, readme=readme)
    assert broken(links) == {"signature", "card"}
    assert "another key" in links[-1].detail


def test_a_signature_value_by_another_key_under_the_artifacts_public_key_is_broken(signed, key_b,
                                                                                   model_dir):
    artifact, readme = signed
    private_b, info_b = key_b
    forged = sign_artifact(artifact, model_dir=model_dir, private_key=private_b, key_info=info_b,
                           attested_at=ATTESTED_AT, nonce=artifact["integrity"]["nonce"])
    artifact["integrity"]["signature"]["value"] = forged["signature"]["value"]
    assert broken(verify(artifact, model_dir=model_dir, readme=readme)) == {"signature", "card"}


def test_a_key_outside_the_trusted_set_breaks_the_signature_link(key_a, key_b, model_dir):
    artifact = sample_artifact()
    private_b, info_b = key_b
    artifact["integrity"] = sign_artifact(artifact, model_dir=model_dir, private_key=private_b,
                                          key_info=info_b, attested_at=ATTESTED_AT)
    assert broken(verify(artifact, model_dir=model_dir)) == set()
    links = verify(artifact, model_dir=model_dir, trusted_key_ids={key_a[1].key_id})
    assert broken(links) == {"signature"}
    assert "trusted" in links[-1].detail
    assert broken(verify(artifact, trusted_key_ids={info_b.key_id})) == set()


@pytest.mark.parametrize("field", ["nonce", "audience", "attestedAt", "modelHash", "code"])
def test_editing_a_signed_integrity_field_breaks_the_signature(signed, field):
    artifact, _ = signed
    integrity = artifact["integrity"]
    integrity[field] = {"runner": "other"} if field == "code" else "sha256:" + "e" * 64
    assert broken(verify(artifact)) == {"signature"}


def test_an_unsigned_artifact_says_signature_none_and_weights_not_recorded(model_dir):
    links = verify(sample_artifact(), model_dir=model_dir)
    assert broken(links) == set(), links
    status = {link.name: link.status for link in links}
    assert status == {"alloyHash": "ok", "weights": "not recorded", "signature": "none"}
    assert links[-1].detail == "artifact is not signed"


def test_require_signature_makes_the_absences_failures(model_dir):
    links = verify(sample_artifact(), model_dir=model_dir, require_signature=True)
    assert broken(links) == {"weights", "signature"}
    assert {link.status for link in links if not link.ok} == {"BROKEN"}
    assert "required" in links[-1].detail


def test_a_trusted_key_set_asks_for_a_signature(key_a):
    links = verify(sample_artifact(), trusted_key_ids={key_a[1].key_id})
    assert broken(links) == {"signature"}


def test_a_signature_present_but_wrong_is_broken_even_when_not_required(signed):
    artifact, _ = signed
    artifact["integrity"]["nonce"] = "changed"
    links = verify(artifact)
    assert broken(links) == {"signature"} and links[-1].status == "BROKEN"


def test_the_model_hash_comes_from_the_last_stage_output_when_no_model_dir_is_given(key_a):
    artifact = sample_artifact()
    integrity = sign_artifact(artifact, model_dir=None, private_key=key_a[0], key_info=key_a[1],
                              attested_at=ATTESTED_AT, nonce="n-1", audience="hub")
    assert integrity["modelHash"] == "sha256:" + "a" * 64
    assert (integrity["nonce"], integrity["audience"]) == ("n-1", "hub")
    artifact["integrity"] = integrity
    assert broken(verify(artifact)) == set()


def test_the_payload_is_the_eight_section_5_fields_with_sorted_benchmarks_and_datasets():
    payload = build_payload(sample_artifact(), model_hash="sha256:" + "a" * 64,
                            attested_at=ATTESTED_AT, nonce="n", audience="public",
                            code_hash="sha256:" + "b" * 64)
    assert list(payload) == ["alloyHash", "attestedAt", "audience", "benchmarkResults",
                             "codeHash", "datasetHashes", "modelHash", "nonce"]
    assert payload["benchmarkResults"] == [{"name": "humaneval", "score": 30.0},
                                           {"name": "mmlu", "score": 41.5}]
    assert payload["datasetHashes"] == ["sha256:" + "c" * 64]


def test_the_payload_canonical_form_does_not_depend_on_key_order():
    artifact = sample_artifact()
    reordered = copy.deepcopy(dict(reversed(list(artifact.items()))))
    reordered["results"] = dict(reversed(list(reordered["results"].items())))
    kwargs = {"model_hash": "sha256:" + "a" * 64, "attested_at": ATTESTED_AT, "nonce": "n",
              "audience": "public", "code_hash": "sha256:" + "b" * 64}
    first, second = build_payload(artifact, **kwargs), build_payload(reordered, **kwargs)
    assert canonical_json(first) == canonical_json(second)
    assert canonical_json(dict(reversed(list(first.items())))) == canonical_json(first)
    assert canonical_json(first).startswith(b'{"alloyHash":"sha256:')


def test_the_code_attestation_hashes_this_package_and_names_its_commit():
    code = code_attestation()
    assert code["runner"] == "foundry"
    assert HEX64.fullmatch(code["binaryHash"])
    assert code["version"]
    assert code["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", code["commit"])
    assert code["environment"].startswith("Python ")
    assert content_hash(code) == content_hash(code_attestation())


# trustLevel is signed (#17 item 3): in `integrity.trustLevelSignature`, an extension beside
# the payload the alloy format fixes; a changed trustLevel breaks verify, and an artifact signed
# before the extension existed still verifies, its trustLevel reported as unsigned.


def _links(artifact: dict[str, Any], model_dir: Path, readme: Path) -> dict[str, Any]:
    return {link.name: link for link in verify(artifact, model_dir=model_dir, readme=readme)}


def test_a_new_signature_signs_the_trust_level(signed: tuple[dict[str, Any], Path],
                                               model_dir: Path) -> None:
    artifact, readme = signed
    assert set(artifact["integrity"][TRUST_SIGNATURE]) == {"algorithm", "keyId", "value"}
    Integrity.model_validate(artifact["integrity"])  # the alloy format's block still reads

    links = _links(artifact, model_dir, readme)

    assert all(link.ok for link in links.values()), links
    assert links["trustLevel"].status == "ok"
    assert "signed by the artifact's key" in links["trustLevel"].detail
    assert links["card"].ok  # the card hash stays signed by the receipt's signature


def test_a_changed_trust_level_breaks_verify(signed: tuple[dict[str, Any], Path],
                                             model_dir: Path) -> None:
    for level in ("verified", "enclave", None):
        artifact = copy.deepcopy(signed[0])
        artifact["integrity"]["trustLevel"] = level
        assert broken(verify(artifact, model_dir=model_dir)) == {"trustLevel"}, level


def test_a_trust_signature_moved_from_another_attestation_breaks_verify(
        signed: tuple[dict[str, Any], Path], model_dir: Path, key_a: Any) -> None:
    artifact = copy.deepcopy(signed[0])
    private, info = key_a
    other = attestation.sign_artifact(artifact, model_dir=model_dir, private_key=private,
                                      key_info=info, attested_at="2026-06-01T00:00:00+00:00")
    artifact["integrity"][TRUST_SIGNATURE] = other[TRUST_SIGNATURE]

    links = _links(artifact, model_dir, signed[1])

    assert broken(list(links.values())) == {"trustLevel"}
    assert "does not match" in links["trustLevel"].detail


def test_an_artifact_signed_before_trust_level_was_signed_still_verifies(
        signed: tuple[dict[str, Any], Path], model_dir: Path) -> None:
    artifact = copy.deepcopy(signed[0])
    del artifact["integrity"][TRUST_SIGNATURE]  # exactly what sign_artifact wrote before

    links = _links(artifact, model_dir, signed[1])

    assert all(link.ok for link in links.values()), links
    assert links["trustLevel"].status == LEGACY_TRUST == \
        "unsigned (signed before trustLevel was signed)"
    artifact["integrity"]["trustLevel"] = "verified"  # and a raised claim is still refused
    assert broken(verify(artifact, model_dir=model_dir)) == {"trustLevel"}
