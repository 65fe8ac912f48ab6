"""Self-attestation of an artifact (ALLOY-FORMAT.md section 5): a local ES256 key, the signed
payload, the `integrity` block, and `verify`, which reports each link of the chain of custody.

The payload is exactly {alloyHash, attestedAt, audience, benchmarkResults, codeHash,
datasetHashes, modelHash, nonce}; its RFC 8785 (JCS) bytes are signed with ECDSA P-256 and
SHA-256 (ES256). As in JOSE (RFC 7518 section 3.4) the signature value is the raw 64-byte
r||s, base64url without padding, not the DER form. `codeHash` is the content hash of the whole
`integrity.code` block. All cryptography is the `cryptography` library's.

The format fixes that payload, and `trustLevel` is not in it. So `trustLevel` is signed in an
extension beside it, `integrity.trustLevelSignature` {algorithm, keyId, value}: ES256 by the
same key over the JCS form of {alloyHash, signature (the payload signature's value),
trustLevel}; naming the payload signature ties it to this one attestation. Readers that do not
know the extension ignore it; the payload signature is unchanged. An artifact signed before
the extension existed still verifies, and its trustLevel is reported as unsigned.

A self-attested signature proves the signed fields were not changed since someone holding the
key signed them; it proves nothing about the signer's honesty (see docs/attestation.md).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import os
import platform
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from foundry.adapters.publishing.key_files import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
)
from foundry.adapters.settings import KeySettings
from foundry.adapters.store.blobs import BlobStore, FileRecord, hash_dir, hash_file, tree_hash
from foundry.domain.artifact_builder import alloy_hash
from foundry.domain.hashing import canonical_json, content_hash, sha256_hex
from foundry.domain.values.artifact import ArtifactDocument

ALGORITHM = "ES256"
# Imported by their installed names: a console script (`foundry`) has no repo root on sys.path.
PACKAGES = ("foundry.domain", "foundry.adapters", "foundry.projections", "foundry.executors")
_COORD = 32  # bytes of one P-256 coordinate: r and s are each this long in r||s


@dataclass(frozen=True)
class KeyInfo:
    key_id: str  # see key_id_of
    public_key_pem: str
    directory: Path


@dataclass(frozen=True)
class Link:
    """One checked link of the chain: what was expected, what was found, and whether they agree."""

    name: str
    ok: bool
    expected: str | None
    found: str | None
    detail: str
    # What the line says: ok, BROKEN, UNSIGNED (a hash no valid signature covers), or the two
    # absences that are not failures unless a signature is required: `none` (no signature at
    # all) and `not recorded` (nothing to compare against). Empty: derived from `ok`.
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "ok" if self.ok else "BROKEN")


NO_SIGNATURE = "none"
NOT_RECORDED = "not recorded"
UNSIGNED = "UNSIGNED"


SELF_ATTESTED = "self-attested"  # the one trust level a signature here can establish
TRUST_SIGNATURE = "trustLevelSignature"  # the integrity block's signed extension (see above)
LEGACY_TRUST = "unsigned (signed before trustLevel was signed)"


def _public_bytes(public_key: ec.EllipticCurvePublicKey, encoding: Encoding) -> bytes:
    data: bytes = public_key.public_bytes(encoding, PublicFormat.SubjectPublicKeyInfo)
    return data


def _public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    return _public_bytes(public_key, Encoding.PEM).decode("ascii")


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:` + hex SHA-256 of the DER SubjectPublicKeyInfo."""
    return sha256_hex(_public_bytes(public_key, Encoding.DER))


def _encoded(passphrase: str | None) -> bytes | None:
    return passphrase.encode() if passphrase else None


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write via a 0600 temp file created with O_EXCL, then rename: never readable by others.
    `exclusive`: link instead of rename, so that of two processes creating a key at once one
    wins and the other gets FileExistsError (a rename would let the second replace a key the
    first may have signed with already)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def create_key(dir: Path, *, passphrase: str | None = None, overwrite: bool = False
               ) -> KeyInfo:
    """Generate an ECDSA P-256 key pair in `dir` (Settings.keys.dir for this machine's).

    Raises FileExistsError when a key is already there and `overwrite` is false. The private
    key is PKCS8, encrypted with `passphrase` (Settings.keys.passphrase) when one is given.
    """
    directory = Path(dir)
    private_path = directory / PRIVATE_KEY_FILE
    if private_path.exists() and not overwrite:
        raise FileExistsError(f"a signing key already exists at {private_path}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    secret = _encoded(passphrase)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret)
        if secret else serialization.NoEncryption()
    )
    _write_private(private_path,
                   key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption),
                   exclusive=not overwrite)
    public_pem = _public_pem(key.public_key())
    (directory / PUBLIC_KEY_FILE).write_text(public_pem)
    return KeyInfo(key_id_of(key.public_key()), public_pem, directory)


def load_key(dir: Path, passphrase: str | None = None
             ) -> tuple[ec.EllipticCurvePrivateKey, KeyInfo] | None:
    """The key pair in `dir`, unlocked with `passphrase`, or None when there is none."""
    directory = Path(dir)
    private_path = directory / PRIVATE_KEY_FILE
    if not private_path.is_file():
        return None
    key = serialization.load_pem_private_key(private_path.read_bytes(),
                                             password=_encoded(passphrase))
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{private_path} is not an ECDSA P-256 key")
    public = key.public_key()
    return key, KeyInfo(key_id_of(public), _public_pem(public), directory)


def signing_key(mode: str, keys: KeySettings
                ) -> tuple[tuple[ec.EllipticCurvePrivateKey, KeyInfo] | None, KeyInfo | None]:
    """The key a sealed run is signed with under Settings.signing `mode`, and the KeyInfo of
    a key this call created (None when it created none). `auto` creates the key on first use;
    when another process creates it at the same moment, that one is loaded."""
    if mode == "off":
        return None, None
    loaded = load_key(keys.dir, keys.passphrase)
    if loaded is not None or mode != "auto":
        return loaded, None
    try:
        created = create_key(keys.dir, passphrase=keys.passphrase)
    except FileExistsError:  # created by another process since load_key looked
        return load_key(keys.dir, keys.passphrase), None
    return load_key(keys.dir, keys.passphrase), created


def _git_commit(directory: Path) -> str | None:
    if "site-packages" in directory.parts:  # an installed copy: any enclosing repo is not ours
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=2, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def code_attestation() -> dict[str, Any]:
    """What ran: this package's version, a hash of its .py files, and the git commit if any.

    `environment` is a string because `CodeAttestation.environment` is typed `str`.
    """
    try:
        version = importlib.metadata.version("foundry")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    entries, roots = [], []
    for name in PACKAGES:
        module_file = importlib.import_module(name).__file__
        if module_file is None:
            continue
        package_dir = Path(module_file).resolve().parent
        roots.append(package_dir)
        for path in package_dir.rglob("*.py"):
            rel = path.relative_to(package_dir.parent).as_posix()
            entries.append({"filename": rel,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    entries.sort(key=lambda entry: entry["filename"])
    return {
        "runner": "foundry",
        "version": version,
        "binaryHash": content_hash(entries),
        "commit": _git_commit(roots[0]) if roots else None,
        "environment": f"Python {platform.python_version()}; {platform.platform()}",
    }


def _dataset_entries(artifact: ArtifactDocument) -> list[dict[str, Any]]:
    corpus = artifact.get("calibrationCorpus")
    if not isinstance(corpus, Mapping) or not corpus.get("contentHash"):
        return []
    entry = {"name": corpus.get("name") or "calibration", "hash": corpus["contentHash"],
             "source": corpus.get("sourceUrl")}
    return [{k: v for k, v in entry.items() if v is not None}]


def build_payload(
    artifact: ArtifactDocument, *, model_hash: str, attested_at: str, nonce: str,
    audience: str, code_hash: str,
) -> dict[str, Any]:
    """The eight signed fields. alloyHash is recomputed from the artifact, never copied."""
    benchmarks = (artifact.get("results") or {}).get("benchmarks") or []
    return {
        "alloyHash": alloy_hash(dict(artifact)),
        "attestedAt": attested_at,
        "audience": audience,
        "benchmarkResults": sorted(
            ({"name": b.get("name"), "score": b.get("score")} for b in benchmarks),
            key=lambda b: str(b["name"]),
        ),
        "codeHash": code_hash,
        "datasetHashes": sorted(d["hash"] for d in _dataset_entries(artifact)),
        "modelHash": model_hash,
        "nonce": nonce,
    }


def sign_payload(payload: Mapping[str, Any], private_key: ec.EllipticCurvePrivateKey) -> str:
    """ES256 over the JCS bytes: base64url (no padding) of the raw 64-byte r||s."""
    der = private_key.sign(canonical_json(dict(payload)), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def weights_hash(artifact: ArtifactDocument, model_dir: Path) -> str:
    """The weights hash of `model_dir`. A published folder also holds GGUF tiers, the alloy
    and the cards: when the artifact names its model files (the last stage's `model` files),
    only those count, so the hash means the same thing as the recorded one."""
    stages = (artifact.get("provenance") or {}).get("stages") or []
    names = [f["path"] for f in (stages[-1].get("files") or []) if f.get("role") == "model"] \
        if stages else []
    if not names:
        return hash_dir(model_dir)
    records = []
    for name in names:
        path = model_dir / name
        digest = hash_file(path)[0] if path.is_file() else "missing"  # streamed, not read whole
        records.append(FileRecord(path=name, sha256=digest, size=0, role="model"))
    return tree_hash(records)


def provenance_records(artifact: ArtifactDocument) -> list[FileRecord]:
    """Every file record of every stage in the artifact's provenance (each blob it references)."""
    records: dict[tuple[str, str], FileRecord] = {}
    for stage in (artifact.get("provenance") or {}).get("stages") or []:
        for f in stage.get("files") or []:
            record = FileRecord.from_dict(f)
            records[(record.path, record.sha256)] = record
    return list(records.values())


def published_records(artifact: ArtifactDocument) -> dict[str, FileRecord]:
    """The files `forge publish` writes from the blob store, by name: the last stage's model
    files and every stage's GGUF outputs (the alloy and the cards are checked by their own
    links)."""
    stages = (artifact.get("provenance") or {}).get("stages") or []
    if not stages:
        return {}
    files = {f["path"]: FileRecord.from_dict(f) for f in stages[-1].get("files") or []
             if f.get("role") == "model"}
    files.update({f["path"]: FileRecord.from_dict(f) for s in stages for f in s.get("files") or []
                  if f.get("role") == "output" and str(f.get("path", "")).endswith(".gguf")})
    return files


def check_published_files(artifact: ArtifactDocument, model_dir: Path,
                          gguf_dir: Path | None = None) -> Link:
    """Every published file the provenance lists is in `model_dir` with its recorded hash
    (streamed), and no other file is; each missing, changed or extra file is named. With
    `gguf_dir` (a publication that put the GGUF tiers in a repo of their own) the tiers are
    looked for there instead, beside only that repo's README.md."""
    from foundry.adapters.publishing.model_signing import SIGNATURE_FILE, STATEMENT_FILE

    expected = published_records(artifact)
    tiers = {n: r for n, r in expected.items() if n.endswith(".gguf")} if gguf_dir else {}
    main = {n: r for n, r in expected.items() if n not in tiers}
    problems = _folder_problems(model_dir, main, {"README.md", "MODEL_METHODOLOGY.md",
                                                  SIGNATURE_FILE, STATEMENT_FILE})
    if gguf_dir is not None:
        problems += [f"GGUF folder: {p}" for p in _folder_problems(
            gguf_dir, tiers, {"README.md", SIGNATURE_FILE, STATEMENT_FILE})]
    elif (ggufs := [n for n in main if n.endswith(".gguf")]) and not any(
            (model_dir / n).exists() for n in ggufs):
        problems.append("no GGUF tier is in this folder: if they were published to a repo of "
                        "their own (?gguf=), give that folder as --gguf-dir")
    return Link("files", not problems, f"{len(expected)} files as recorded",
                "; ".join(problems) or f"{len(expected)} files as recorded",
                "every published file matches the provenance" if not problems else
                "published files differ from the provenance")


def _folder_problems(folder: Path, expected: Mapping[str, FileRecord],
                     also_allowed: set[str]) -> list[str]:
    """Each of `expected` missing from `folder` or changed, and each other file there that is
    neither in `also_allowed` nor an .alloy.json."""
    problems: list[str] = []
    for name, record in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif hash_file(path)[0] != record.sha256:
            problems.append(f"{name}: content does not match {record.sha256}")
    listed = set(expected) | also_allowed
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in listed \
                and not rel.endswith(".alloy.json"):
            problems.append(f"{rel}: extra file, not in the provenance")
    return problems


def check_blobs(artifact: ArtifactDocument, blobs: BlobStore) -> Link:
    """Every blob the artifact references is in the store and hashes to its name."""
    records = provenance_records(artifact)
    problems = [str(e) for e in blobs.check_records(records)]
    return Link("blobs", not problems, f"{len(records)} blobs intact",
                "; ".join(problems) or f"{len(records)} blobs intact",
                "every referenced blob is intact" if not problems else
                "referenced blobs are missing or corrupt")


def _model_hash(artifact: ArtifactDocument, model_dir: Path | None) -> str:
    if model_dir is not None:
        return weights_hash(artifact, Path(model_dir))
    stages = (artifact.get("provenance") or {}).get("stages") or []
    if stages and stages[-1].get("outputHash"):
        return str(stages[-1]["outputHash"])
    raise ValueError("no model hash: pass model_dir, or sign an artifact whose last stage has one")


def sign_artifact(
    artifact: ArtifactDocument, *, model_dir: Path | None,
    private_key: ec.EllipticCurvePrivateKey, key_info: KeyInfo, attested_at: str,
    nonce: str | None = None, audience: str = "public",
) -> dict[str, Any]:
    """The `integrity` block for `artifact` (signature value: raw r||s, see `sign_payload`)."""
    code = code_attestation()
    model_hash = _model_hash(artifact, model_dir)
    nonce = nonce if nonce is not None else secrets.token_urlsafe(16)
    payload = build_payload(artifact, model_hash=model_hash, attested_at=attested_at,
                            nonce=nonce, audience=audience, code_hash=content_hash(code))
    value = sign_payload(payload, private_key)
    return {
        "trustLevel": SELF_ATTESTED,
        "code": code,
        "modelHash": model_hash,
        "alloyHash": payload["alloyHash"],
        "datasets": _dataset_entries(artifact),
        "nonce": nonce,
        "audience": audience,
        "signature": {"algorithm": ALGORITHM, "publicKey": key_info.public_key_pem,
                      "value": value, "keyId": key_info.key_id},
        "attestedAt": attested_at,
        TRUST_SIGNATURE: {"algorithm": ALGORITHM, "keyId": key_info.key_id,
                          "value": sign_payload(trust_payload(payload["alloyHash"], value,
                                                              SELF_ATTESTED), private_key)},
    }


def trust_payload(alloy_hash_: Any, signature_value: Any, trust_level: Any) -> dict[str, Any]:
    """What `trustLevelSignature` covers (see the module docstring)."""
    return {"alloyHash": alloy_hash_, "signature": signature_value, "trustLevel": trust_level}


def receipt_payload(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """What a receipt signature covers: the artifact it is for and its card's hash."""
    return {"alloyHash": receipt.get("alloyHash"), "cardHash": receipt.get("cardHash")}


def sign_receipt(receipt: Mapping[str, Any], private_key: ec.EllipticCurvePrivateKey,
                 key_info: KeyInfo) -> dict[str, Any]:
    """The receipt's `signature`, by the key that signed the artifact (publish adds it)."""
    return {"algorithm": ALGORITHM, "keyId": key_info.key_id,
            "value": sign_payload(receipt_payload(receipt), private_key)}


def _verify_raw(key: ec.EllipticCurvePublicKey, payload: Mapping[str, Any], value: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return False
    if len(raw) != 2 * _COORD:
        return False
    der = encode_dss_signature(int.from_bytes(raw[:_COORD], "big"),
                               int.from_bytes(raw[_COORD:], "big"))
    try:
        key.verify(der, canonical_json(dict(payload)), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _receipt_signed(artifact: ArtifactDocument) -> bool:
    """Whether the receipt carries a valid signature by the artifact's own (checked) key, over
    this artifact's alloyHash and the receipt's cardHash."""
    receipt = artifact.get("receipt") or {}
    sig = receipt.get("signature") if isinstance(receipt, Mapping) else None
    integrity = artifact.get("integrity") or {}
    signer = integrity.get("signature") or {} if isinstance(integrity, Mapping) else {}
    if not isinstance(sig, Mapping) or sig.get("algorithm") != ALGORITHM \
            or sig.get("keyId") != signer.get("keyId") \
            or receipt.get("alloyHash") != alloy_hash(dict(artifact)):
        return False
    try:
        key = serialization.load_pem_public_key(str(signer.get("publicKey", "")).encode())
    except ValueError:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    return _verify_raw(key, receipt_payload(receipt), str(sig.get("value", "")))


def _card_link(artifact: ArtifactDocument, readme: Path, signature_ok: bool) -> Link:
    """The card link says what it proves: a README matching an unsigned cardHash proves
    nothing (whoever edits the README can set the hash beside it), so it is `unsigned`
    and never ok, signature required or not: an unsigned file's README and receipt can be
    rewritten together."""
    receipt = artifact.get("receipt") or {}
    expected = receipt.get("cardHash") if isinstance(receipt, Mapping) else None
    if not readme.is_file():  # never hash /dev/zero or a FIFO named as the README
        return Link("card", False, expected, None, f"{readme} is not a regular file")
    found = hash_file(readme)[0]
    if expected != found:
        return Link("card", False, expected, found, "the README's hash does not match")
    if signature_ok and _receipt_signed(artifact):
        return Link("card", True, expected, found,
                    "the README's hash matches the cardHash signed by the artifact's key")
    return Link("card", False, expected, found,
                "unsigned: the README matches the receipt's cardHash, but no valid signature "
                "covers that hash, so the match proves nothing", UNSIGNED)


def _check_signature(
    artifact: ArtifactDocument, trusted_key_ids: set[str] | None
) -> tuple[bool, str | None, str | None, str]:
    """(ok, expected keyId, found keyId, detail) of the integrity block's signature."""
    integrity = artifact.get("integrity")
    if not isinstance(integrity, Mapping) or not integrity.get("signature"):
        return False, None, None, "artifact is not signed"
    sig = integrity["signature"]
    claimed = sig.get("keyId")
    if sig.get("algorithm") != ALGORITHM:
        return False, claimed, None, f"unsupported algorithm {sig.get('algorithm')!r}"
    try:
        key = serialization.load_pem_public_key(str(sig.get("publicKey", "")).encode())
        value = str(sig.get("value", ""))
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError as exc:
        return False, claimed, None, f"unreadable public key or signature: {exc}"
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return False, claimed, None, "the embedded public key is not ECDSA P-256"
    actual = key_id_of(key)
    if claimed != actual:
        return False, claimed, actual, "signed by another key than the artifact's keyId"
    if trusted_key_ids is not None and actual not in trusted_key_ids:
        return False, claimed, actual, "the signing key is not one of the trusted keys"
    payload = build_payload(
        artifact, model_hash=str(integrity.get("modelHash")),
        attested_at=str(integrity.get("attestedAt")), nonce=str(integrity.get("nonce")),
        audience=str(integrity.get("audience")), code_hash=content_hash(integrity.get("code")),
    )
    if integrity.get("alloyHash") != payload["alloyHash"]:
        return False, claimed, actual, "integrity.alloyHash is not the artifact's content hash"
    signed_datasets = sorted(str(d.get("hash")) for d in integrity.get("datasets") or [])
    if signed_datasets != payload["datasetHashes"]:
        return False, claimed, actual, "integrity.datasets do not match the calibration corpus"
    if len(raw) != 2 * _COORD:
        return False, claimed, actual, f"signature is {len(raw)} bytes, not a 64-byte r||s"
    der = encode_dss_signature(int.from_bytes(raw[:_COORD], "big"),
                               int.from_bytes(raw[_COORD:], "big"))
    try:
        key.verify(der, canonical_json(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False, claimed, actual, "signature does not match the signed fields"
    return True, claimed, actual, "valid ES256 signature"


def _link(name: str, expected: str | None, found: str | None, what: str) -> Link:
    ok = expected is not None and expected == found
    return Link(name, ok, expected, found, f"{what} {'matches' if ok else 'does not match'}")


def _is_signed(artifact: ArtifactDocument) -> bool:
    integrity = artifact.get("integrity")
    return isinstance(integrity, Mapping) and bool(integrity.get("signature"))


def verify(
    artifact: ArtifactDocument, *, model_dir: Path | None = None, readme: Path | None = None,
    trusted_key_ids: set[str] | None = None, blobs: BlobStore | None = None,
    require_signature: bool = False, gguf_dir: Path | None = None,
) -> list[Link]:
    """Check each link: alloyHash, weights and files (with model_dir), card (with readme),
    blobs (with the store holding the run), signature. A card whose cardHash no valid
    signature covers is reported `unsigned`, never ok.

    Absence is not tampering: an artifact with no signature at all reports `signature: none`
    and `weights: not recorded` (only a signature records the weights hash), which fail only
    with `require_signature` (or a trusted key set, which asks for a signature by name). A
    signature that is present and wrong is always BROKEN."""
    integrity = artifact.get("integrity") or {}
    signed = _is_signed(artifact)
    absent_ok = not signed and not require_signature and trusted_key_ids is None
    links = [_link("alloyHash", artifact.get("alloyHash"), alloy_hash(dict(artifact)),
                   "the recomputed content hash")]
    if model_dir is not None:
        recorded = integrity.get("modelHash") if isinstance(integrity, Mapping) else None
        found_weights = weights_hash(artifact, Path(model_dir))
        if recorded is None and not signed:
            links.append(Link("weights", absent_ok, None, found_weights,
                              "no weights hash recorded (only a signature records one)",
                              NOT_RECORDED if absent_ok else "BROKEN"))
        else:
            links.append(_link("weights", recorded, found_weights,
                               "the weights hash of the model directory"))
        if published_records(artifact):  # a provenance without file records has no list
            links.append(check_published_files(artifact, Path(model_dir), gguf_dir))
        from foundry.adapters.publishing.model_signing import check_folder

        # OpenSSF model.sig and the in-toto/SLSA statement, when the folder has them (#14).
        links += [Link(name, ok_, None, None, detail, status)
                  for name, ok_, status, detail in check_folder(artifact, Path(model_dir))]
        if gguf_dir is not None:  # the GGUF repo's own signature and statement
            links += [Link(f"gguf {name}", ok_, None, None, detail, status)
                      for name, ok_, status, detail in check_folder(artifact, Path(gguf_dir))]
    ok, expected, found, detail = _check_signature(artifact, trusted_key_ids)
    if readme is not None:
        links.append(_card_link(artifact, Path(readme), ok))
    if blobs is not None:
        links.append(check_blobs(artifact, blobs))
    if signed:
        links.append(Link("signature", ok, expected, found, detail))
    else:
        links.append(Link("signature", absent_ok, None, None,
                          "artifact is not signed" + ("" if absent_ok else
                                                      " and a signature is required"),
                          NO_SIGNATURE if absent_ok else "BROKEN"))
    if integrity and isinstance(integrity, Mapping):
        links += _trust_link(integrity, signature_ok=ok)
    return links


def _trust_link(integrity: Mapping[str, Any], *, signature_ok: bool) -> list[Link]:
    """The trustLevel link: signed by the extension (ok), changed since (BROKEN), or an
    artifact signed before the extension (reported unsigned; self-attested was then the only
    level written, so it is not a failure). A level other than self-attested is never ok: a
    signature here can only ever show self-attestation."""
    claimed = integrity.get("trustLevel")
    extension = integrity.get(TRUST_SIGNATURE)
    if claimed != SELF_ATTESTED:
        return [Link("trustLevel", False, SELF_ATTESTED, str(claimed),
                     "only self-attestation can be verified")]
    if not signature_ok:  # the signature link already says what is wrong
        return []
    if extension is None:
        return [Link("trustLevel", True, SELF_ATTESTED, str(claimed),
                     "signed before trustLevel was signed: the claim is not covered by the "
                     "signature", LEGACY_TRUST)]
    signature = integrity.get("signature") or {}
    key = serialization.load_pem_public_key(str(signature.get("publicKey", "")).encode())
    signed = (isinstance(extension, Mapping) and extension.get("algorithm") == ALGORITHM
              and extension.get("keyId") == signature.get("keyId")
              and isinstance(key, ec.EllipticCurvePublicKey)
              and _verify_raw(key, trust_payload(integrity.get("alloyHash"),
                                                 signature.get("value"), claimed),
                              str(extension.get("value", ""))))
    return [Link("trustLevel", signed, SELF_ATTESTED, str(claimed),
                 "trustLevel is signed by the artifact's key" if signed else
                 "trustLevelSignature does not match: trustLevel or the signature was changed "
                 "after signing")]
