"""OpenSSF model signing and SLSA provenance for a published model folder (issue #14 item 4).

Beside the alloy format's ES256 integrity block (attestation.py, unchanged), a published
folder gets two files that tools outside Foundry verify:

- `provenance.intoto.json`: an in-toto Statement v1 whose subjects are the published weight
  files with their sha256 (the digests the artifact's provenance records), with a SLSA
  provenance v1 predicate: the builder (Foundry and its version), the build definition
  (recipe id, version and hash), the resolved dependencies (base model hash, corpus hash,
  tool versions) and the run details (run id, node, attempts).
- `model.sig`: a sigstore bundle written by the `model_signing` library (PyPI
  `model-signing`) with the same local ECDSA P-256 key that signs the artifact
  (`foundry keys create`); it covers every file of the folder, the statement and the cards
  included. Sigstore keyless signing is out of scope.

`model_signing`'s own verifier accepts what is written here (a test runs it), and
`foundry verify --model-dir` checks both.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from foundry.adapters.settings import KeySettings
from foundry.adapters.store.blobs import hash_file
from foundry.domain.run_state import State
from foundry.domain.values.artifact import ArtifactDocument

SIGNATURE_FILE = "model.sig"
STATEMENT_FILE = "provenance.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://foundry.invalid/forge-run/v1"  # what a forge run's parameters mean
BUILDER_ID = "https://foundry.invalid/builder/foundry"


def _foundry_version() -> str:
    try:
        return metadata.version("foundry")
    except metadata.PackageNotFoundError:
        return "unknown"


def _hex(digest: str | None) -> str | None:
    return digest.removeprefix("sha256:") if digest else None


def provenance_statement(state: State, artifact: ArtifactDocument,
                         subjects: Mapping[str, str]) -> dict[str, Any]:
    """The in-toto statement for a run (its state) and its published files (name -> sha256)."""
    recipe = state.get("recipe") or {}
    corpus = recipe.get("calibrationCorpus") or {}
    source = state.get("source") or {}
    attempts = state.get("attempts") or []
    last = attempts[-1] if attempts else {}
    dependencies: list[dict[str, Any]] = []
    if source.get("sourceHash"):
        dependencies.append({"name": "baseModel", "uri": str(source.get("baseModel")),
                             "digest": {"sha256": _hex(source["sourceHash"])}})
    if isinstance(corpus, Mapping) and corpus.get("contentHash"):
        dependencies.append({"name": f"calibrationCorpus:{corpus.get('name')}",
                             "uri": str(corpus.get("sourceUrl") or ""),
                             "digest": {"sha256": _hex(str(corpus["contentHash"]))}})
    for tool, version in sorted((last.get("software") or {}).items()):
        dependencies.append({"name": f"tool:{tool}", "annotations": {"version": version}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": _hex(digest)}}
                    for name, digest in sorted(subjects.items())],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"recipe": {
                    "id": state.get("recipeId"), "version": state.get("recipeVersion"),
                    "revision": state.get("recipeRevision"), "hash": state.get("recipeHash")}},
                "internalParameters": {"hardwareNode": state.get("hardwareNode"),
                                       "alloyHash": artifact.get("alloyHash")},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"foundry": _foundry_version()}},
                "metadata": {"invocationId": state.get("runId"),
                             "startedOn": attempts[0].get("startedAt") if attempts else None,
                             "finishedOn": state.get("sealedAt")},
                "byproducts": [{"name": "attempts", "content": None, "annotations": {
                    "count": len(attempts),
                    "node": last.get("node"), "workerHost": last.get("workerHost"),
                    "device": last.get("device")}}],
            },
        },
    }


def sign_folder(folder: Path, state: State, artifact: ArtifactDocument,
                weight_files: Mapping[str, str], keys: KeySettings) -> list[str]:
    """Write the statement and sign the folder with the local key (`keys`), when there is one
    (as the seal does); the names of the files written, [] without a key."""
    from foundry.adapters.publishing.key_files import PRIVATE_KEY_FILE

    key = keys.dir / PRIVATE_KEY_FILE
    if not key.is_file():
        return []
    from model_signing import hashing, signing

    statement = provenance_statement(state, artifact, weight_files)
    (folder / STATEMENT_FILE).write_text(json.dumps(statement, indent=2, sort_keys=True) + "\n")
    config = signing.Config().use_elliptic_key_signer(  # type: ignore[no-untyped-call]
        private_key=key, password=keys.passphrase)
    # The signature lies in the folder it signs: the manifest records it as ignored (by its
    # relative name), so any verifier, ours or model_signing's CLI, leaves it out.
    config.set_hashing_config(hashing.Config().set_ignored_paths(  # type: ignore[no-untyped-call]
        paths=[SIGNATURE_FILE]))
    config.sign(folder, folder / SIGNATURE_FILE)
    return [STATEMENT_FILE, SIGNATURE_FILE]


def verify_folder(folder: Path, public_key_pem: str) -> None:
    """model_signing's own verification of `folder` against its model.sig; raises on any
    difference (a changed, added or missing file, another key)."""
    from model_signing import verifying

    with tempfile.TemporaryDirectory(prefix="foundry-verify-") as tmp:
        key = Path(tmp) / "public.pem"
        key.write_text(public_key_pem)
        config = verifying.Config().use_elliptic_key_verifier(  # type: ignore[no-untyped-call]
            public_key=key)
        config.verify(folder, folder / SIGNATURE_FILE)  # hashing as the manifest records


def check_folder(artifact: ArtifactDocument, folder: Path) -> list[tuple[str, bool, str, str]]:
    """(name, ok, status, detail) for the model signature and the provenance statement of a
    published folder; [] when the folder has neither (published without a key)."""
    results: list[tuple[str, bool, str, str]] = []
    sig, stmt = folder / SIGNATURE_FILE, folder / STATEMENT_FILE
    if not sig.exists() and not stmt.exists():
        return results
    integrity = artifact.get("integrity") or {}
    public = ((integrity.get("signature") or {}).get("publicKey")
              if isinstance(integrity, Mapping) else None)
    if not sig.is_file() or not public:
        results.append(("modelSig", False, "BROKEN",
                        "model.sig missing" if not sig.is_file() else
                        "no public key in the artifact's integrity block to check model.sig"))
    else:
        try:
            verify_folder(folder, str(public))
            results.append(("modelSig", True, "ok",
                            "model_signing verifies the folder with the artifact's key"))
        except Exception as e:  # the library raises ValueError and others: each is a failure
            results.append(("modelSig", False, "BROKEN", f"model_signing: {e}"))
    results.append(_check_statement(artifact, stmt))
    return results


def _check_statement(artifact: ArtifactDocument,
                     path: Path) -> tuple[str, bool, str, str]:
    if not path.is_file():
        return ("provenance", False, "BROKEN", f"{STATEMENT_FILE} missing")
    try:
        statement = json.loads(path.read_text(encoding="utf-8"))
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        internal = statement["predicate"]["buildDefinition"]["internalParameters"]
        recipe = statement["predicate"]["buildDefinition"]["externalParameters"]["recipe"]
    except (ValueError, KeyError, TypeError) as e:
        return ("provenance", False, "BROKEN", f"unreadable statement: {e}")
    if statement.get("_type") != STATEMENT_TYPE or \
            statement.get("predicateType") != SLSA_PROVENANCE:
        return ("provenance", False, "BROKEN", "not an in-toto v1 SLSA provenance statement")
    problems = []
    for name, digest in sorted(subjects.items()):
        file = path.parent / name
        if not file.is_file() or _hex(hash_file(file)[0]) != digest:
            problems.append(f"{name}: does not match the statement's digest")
    if internal.get("alloyHash") != artifact.get("alloyHash"):
        problems.append("the statement names another alloyHash than the artifact's")
    if not recipe.get("hash"):
        problems.append("the statement names no recipe hash")
    if problems:
        return ("provenance", False, "BROKEN", "; ".join(problems))
    return ("provenance", True, "ok", f"{len(subjects)} subjects match; recipe hash "
            f"{recipe['hash']}")
