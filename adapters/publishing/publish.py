"""forge/publish: put a sealed artifact's files where people get them, card last.

Reads only the artifact and the blob store: the forged model (the last stage's model files,
their weights hash checked against the recorded output hash), every GGUF tier, the artifact as
`<name>.alloy.json`, then README.md and MODEL_METHODOLOGY.md rendered from the artifact.
A failure is recorded (PublishFailed, with the hub's request id) and leaves the run sealed and
unpublished: publishing again retries.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from foundry.adapters.clock import utc_now
from foundry.adapters.publishing.hub import PublishError, upload_to_hub
from foundry.adapters.publishing.safe_files import (
    check_target_dir,
    safe_file_name,
    writable_dir,
    write_atomic,
)
from foundry.adapters.publishing.source_license import check_license
from foundry.adapters.store.blobs import FileRecord, tree_hash
from foundry.domain import run_state
from foundry.domain.artifact_builder import build_artifact
from foundry.domain.errors import InvalidInputError, RunStateError

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices as Foundry

CARD_FILES = ("README.md", "MODEL_METHODOLOGY.md")


def publishable_artifact(state: run_state.State) -> dict[str, Any]:
    """The artifact as published: what the run sealed, signed if it was, without the view's
    status and without a receipt (the receipt is what publishing itself adds)."""
    artifact = build_artifact(state)
    artifact.pop("receipt", None)
    return artifact


def stage_files(foundry: Foundry, state: run_state.State, dest: Path) -> list[str]:
    """Materialise the model files and GGUF tiers into `dest`; returns their names."""
    stages = run_state.completed_stages(state)
    if not stages:
        raise RunStateError(state["runId"], "nothing to publish: no completed stage")
    last = stages[-1]
    model = [FileRecord.from_dict(f) for f in last["files"] if f["role"] == "model"]
    if tree_hash(model) != last["outputHash"]:
        raise RunStateError(state["runId"], "weights hash does not match the recorded output")
    ggufs = {f["path"]: FileRecord.from_dict(f) for s in stages for f in s["files"]
             if f["role"] == "output" and f["path"].endswith(".gguf")}
    foundry.blobs.materialize([*model, *ggufs.values()], dest)
    return sorted([r.path for r in model] + list(ggufs))


def publish_run(foundry: Foundry, run_id: UUID, target: str, *, force: bool = False,
                reason: str = "") -> dict[str, Any]:
    run = foundry.runs.get_run(run_id)
    run.check_publishable(forced=force, force_reason=reason)  # before anything is uploaded
    check_target(target)
    from foundry.adapters.publishing.cards import card_hash, render_cards

    artifact = publishable_artifact(run.state)
    # Before anything is uploaded: a derived model keeps its base's license unless the
    # recipe overrides it with a reason (source_license.py). --force is for the gate only.
    check_license(foundry, run.state, artifact)
    # A recipe name is a user string: reduced to a plain file name, it cannot leave the folder.
    name = safe_file_name(str(artifact.get("recipeName") or ""), fallback="artifact")
    cards = render_cards(artifact)
    digest, at, url = card_hash(cards["README.md"]), utc_now(), target_url(target)
    # The published alloy carries its receipt, so `foundry verify FILE` can check the card
    # next to it offline; the same receipt is recorded in the Published event below.
    receipt: dict[str, Any] = {
        "publications": [{"target": target, "url": url, "publishedAt": at}],
        "alloyHash": artifact.get("alloyHash"), "cardHash": digest, "issuedAt": at}
    signature = _receipt_signature(artifact, receipt)
    if signature is not None:
        receipt["signature"] = signature
    published = {**artifact, "receipt": receipt}
    with tempfile.TemporaryDirectory(prefix="foundry-publish-") as tmp:
        folder = Path(tmp)
        files = stage_files(foundry, run.state, folder)
        staged = list(files)  # the weights, tiers and model files: the statement's subjects
        (folder / f"{name}.alloy.json").write_text(
            json.dumps(published, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        for card, text in cards.items():
            (folder / card).write_text(text, encoding="utf-8")
        files += [f"{name}.alloy.json", *CARD_FILES]
        # OpenSSF model signature and in-toto/SLSA provenance (#14), with the seal's key.
        from foundry.adapters.publishing.model_signing import sign_folder
        from foundry.adapters.store.blobs import hash_file

        files += sign_folder(folder, run.state, artifact,
                             {f: hash_file(folder / f)[0] for f in staged})
        try:
            _upload(target, folder)
        except PublishError as e:
            _record_failure(foundry, run_id, target, e)
            raise
    foundry.runs.record(run_id, lambda r: r.record_publication(
        target=target, url=url, files=files, card_hash=digest, forced=force,
        force_reason=reason, at=at))
    return {"runId": str(run_id), "target": target, "url": url, "files": files,
            "cardHash": digest, "forced": force}


def _receipt_signature(artifact: dict[str, Any], receipt: dict[str, Any]) -> dict[str, Any] | None:
    """A signed artifact's card hash is signed too, by the same key (when this machine holds
    it), so `verify` can tell a card the signer published from one edited beside its hash."""
    from foundry.adapters.publishing.attestation import load_key, sign_receipt

    integrity = artifact.get("integrity")
    if not isinstance(integrity, dict) or not integrity.get("signature"):
        return None
    loaded = load_key()
    if loaded is None or loaded[1].key_id != integrity["signature"].get("keyId"):
        return None
    return sign_receipt(receipt, loaded[0], loaded[1])


def check_target(target: str) -> None:
    """Refuse, before any work, a target that is neither form or a directory under /proc,
    /sys or /dev."""
    if target.startswith("file://"):
        check_target_dir(_directory_of(target), "target")
    elif not target.startswith("hf://"):
        raise InvalidInputError("target", "must be hf://<org>/<repo> or file:///<dir>")


def _directory_of(target: str) -> Path:
    path = unquote(urlsplit(target).path)
    if not path.startswith("/"):
        raise InvalidInputError("target", f"{target}: a file:// target needs an absolute path")
    return Path(path)


def target_url(target: str) -> str:
    """Where people find a publication: the directory's file URI, or the hub repo page."""
    if target.startswith("file://"):
        return Path(unquote(urlsplit(target).path)).resolve().as_uri()
    import os

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{target.removeprefix('hf://')}"


def _upload(target: str, folder: Path) -> str:
    if target.startswith("file://"):
        return _publish_to_directory(_directory_of(target), folder)
    if target.startswith("hf://"):
        return upload_to_hub(target.removeprefix("hf://"), folder, CARD_FILES)
    raise InvalidInputError("target", "must be hf://<org>/<repo> or file:///<dir>")


def _publish_to_directory(dest: Path, folder: Path) -> str:
    """Copy each file in atomically, the cards last; see safe_files: no symlink planted in
    `dest` is ever written through, and every file lands directly inside `dest`."""
    dest = writable_dir(dest, "target", create=True)
    names = sorted(p.name for p in folder.iterdir() if p.name not in CARD_FILES)
    for name in [*names, *CARD_FILES]:
        write_atomic(dest, name, folder / name, field="target")
    return dest.as_uri()


def _record_failure(foundry: Foundry, run_id: UUID, target: str, error: PublishError) -> None:
    foundry.runs.record(run_id, lambda r: r.record_publish_failure(
        target=target, error_type=error.kind, message=str(error), request_id=error.request_id,
        status=error.status, at=utc_now()))
