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
from foundry.adapters.publishing.cards import card_hash
from foundry.adapters.publishing.gguf_repo import (
    HUB_SCHEME,
    HubTarget,
    gguf_link,
    gguf_readme,
    parse_hub_target,
)
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
from foundry.domain.values.artifact import ArtifactDocument

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices as Foundry
    from foundry.adapters.settings import HubSettings, KeySettings

CARD_FILES = ("README.md", "MODEL_METHODOLOGY.md")


def publishable_artifact(state: run_state.State) -> ArtifactDocument:
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
    hub = foundry.settings.hub
    artifact = publishable_artifact(run.state)
    # Before anything is uploaded: a derived model keeps its base's license unless the
    # recipe overrides it with a reason (source_license.py). --force is for the gate only.
    check_license(foundry, run.state, artifact)
    # A recipe name is a user string: reduced to a plain file name, it cannot leave the folder.
    name = safe_file_name(str(artifact.get("recipeName") or ""), fallback="artifact")
    split = parse_hub_target(target) if target.startswith(HUB_SCHEME) else None
    gguf_target = split.gguf_target if split else None
    main_target = split.model_target if split else target
    at = utc_now()
    with tempfile.TemporaryDirectory(prefix="foundry-publish-") as tmp:
        folder, gguf_folder = Path(tmp) / "model", Path(tmp) / "gguf"
        folder.mkdir()
        files = stage_files(foundry, run.state, folder)
        staged = list(files)  # the weights, tiers and model files: the statement's subjects
        ggufs = _move_ggufs(folder, gguf_folder, files) if gguf_target else []
        files = [f for f in files if f not in ggufs]
        cards = _cards(foundry, run.state, artifact, hub.base_url, split, ggufs)
        pubs = [{"target": t, "url": target_url(t, hub)}
                for t in (gguf_target, main_target) if t and (t != gguf_target or ggufs)]
        digest, url = card_hash(cards["README.md"]), pubs[-1]["url"]
        files += _write_alloy_and_cards(foundry, folder, name, artifact, cards, pubs, at)
        # OpenSSF model signature and in-toto/SLSA provenance (#14), with the seal's key.
        from foundry.adapters.publishing.model_signing import sign_folder
        from foundry.adapters.store.blobs import hash_file

        files += sign_folder(folder, run.state, artifact,
                             {f: hash_file(folder / f)[0] for f in staged if f not in ggufs},
                             foundry.settings.keys)
        _upload_or_record(foundry, run_id, target, main_target, folder, hub)
        gguf_files = [*ggufs, "README.md"]
        if gguf_target and ggufs:
            (gguf_folder / "README.md").write_text(cards[GGUF_CARD], encoding="utf-8")
            # The GGUF repo is signed like the model's: its own statement names its tiers.
            gguf_files += sign_folder(gguf_folder, run.state, artifact,
                                      {g: hash_file(gguf_folder / g)[0] for g in ggufs},
                                      foundry.settings.keys)
            _upload_ggufs(foundry, run_id, gguf_target, gguf_folder, hub, at=at,
                          main=(main_target, url, files, digest, force, reason))
    if len(pubs) > 1:  # the GGUF repo's first: the receipt's cardHash is the last one's
        gguf_pub, gguf_hash = pubs[0], card_hash(cards[GGUF_CARD])
        foundry.runs.record(run_id, lambda r: r.record_publication(
            target=gguf_pub["target"], url=gguf_pub["url"], files=gguf_files,
            card_hash=gguf_hash, forced=force, force_reason=reason, at=at))
    foundry.runs.record(run_id, lambda r: r.record_publication(
        target=main_target, url=url, files=files, card_hash=digest, forced=force,
        force_reason=reason, at=at))
    return _result(run_id, target, url, files, digest, force, pubs, gguf_files)


def _write_alloy_and_cards(foundry: Foundry, folder: Path, name: str,
                           artifact: ArtifactDocument, cards: dict[str, str],
                           pubs: list[dict[str, Any]], at: str) -> list[str]:
    """The published alloy with its receipt, and the cards; their file names. The alloy
    carries the receipt so that `foundry verify FILE` can check the card next to it offline;
    the same receipt is recorded in the Published events."""
    receipt: dict[str, Any] = {
        "publications": [{**p, "publishedAt": at} for p in pubs],
        "alloyHash": artifact.get("alloyHash"), "cardHash": card_hash(cards["README.md"]),
        "issuedAt": at}
    signature = _receipt_signature(artifact, receipt, foundry.settings.keys)
    if signature is not None:
        receipt["signature"] = signature
    published = {**artifact, "receipt": receipt}
    (folder / f"{name}.alloy.json").write_text(
        json.dumps(published, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    for card, text in cards.items():
        if card in CARD_FILES:
            (folder / card).write_text(text, encoding="utf-8")
    return [f"{name}.alloy.json", *CARD_FILES]


def _result(run_id: UUID, target: str, url: str, files: list[str], digest: str, force: bool,
            pubs: list[dict[str, Any]], gguf_files: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"runId": str(run_id), "target": target, "url": url,
                              "files": files, "cardHash": digest, "forced": force}
    if len(pubs) > 1:
        result["gguf"] = {"target": pubs[0]["target"], "url": pubs[0]["url"],
                          "files": gguf_files}
    return result


GGUF_CARD = "gguf/README.md"


def _cards(foundry: Foundry, state: run_state.State, artifact: ArtifactDocument, hub_url: str,
           split: HubTarget | None, ggufs: list[str]) -> dict[str, str]:
    """README.md and MODEL_METHODOLOGY.md; a chain's base_model and note; the GGUF repo's
    README and the parent's link to it when the tiers go to a repo of their own."""
    from foundry.adapters.publishing.cards import render_cards
    from foundry.adapters.publishing.chain import chain_base, with_base_model

    cards = render_cards(artifact)
    chain = chain_base(foundry, state, hub_url=hub_url)
    if chain is not None:  # forged from another artifact: its repo is the base (chain.py)
        readme = cards["README.md"]
        if chain.base_model:
            readme = with_base_model(readme, artifact, chain.base_model)
        cards["README.md"] = f"{readme}\n## Lineage\n\n{chain.note}\n"
    if split is not None and split.gguf_repo and ggufs:
        gguf_url = f"{hub_url}/{split.gguf_repo}"
        cards["README.md"] += gguf_link(split.gguf_repo, gguf_url, ggufs)
        hashes = {f["path"]: f["sha256"] for s in run_state.completed_stages(state)
                  for f in s["files"] if f["path"] in ggufs}
        cards[GGUF_CARD] = gguf_readme(artifact, split.repo, f"{hub_url}/{split.repo}", hashes)
    return cards


def _move_ggufs(folder: Path, dest: Path, files: list[str]) -> list[str]:
    dest.mkdir()
    ggufs = [f for f in files if f.endswith(".gguf")]
    for name in ggufs:
        (folder / name).rename(dest / name)
    return ggufs


def _upload_or_record(foundry: Foundry, run_id: UUID, target: str, upload_target: str,
                      folder: Path, hub: HubSettings) -> None:
    try:
        _upload(upload_target, folder, hub)
    except PublishError as e:
        _record_failure(foundry, run_id, target, e)
        raise


def _upload_ggufs(foundry: Foundry, run_id: UUID, gguf_target: str, folder: Path,
                  hub: HubSettings, *, at: str,
                  main: tuple[str, str, list[str], str, bool, str]) -> None:
    """The second repo. When it fails the first is already public: that publication is
    recorded as what it is, the failure as a PublishFailed naming the repo and its files,
    and the error says both, so no caller mistakes half a publication for a whole one."""
    try:
        upload_to_hub(gguf_target.removeprefix(HUB_SCHEME), folder, ("README.md",), hub=hub)
    except PublishError as e:
        target, url, files, digest, forced, reason = main
        foundry.runs.record(run_id, lambda r: r.record_publication(
            target=target, url=url, files=files, card_hash=digest, forced=forced,
            force_reason=reason, at=at))
        names = sorted(p.name for p in folder.iterdir())
        partial = PublishError(
            gguf_target, f"{e}. The GGUF tiers ({', '.join(names)}) were not published to "
            f"{gguf_target}; {target} was published ({', '.join(files)}) and its card links to "
            f"{gguf_target}: publish again to send both", status=e.status,
            request_id=e.request_id, kind=e.kind)
        _record_failure(foundry, run_id, gguf_target, partial)
        raise partial from None


def _receipt_signature(artifact: ArtifactDocument, receipt: dict[str, Any],
                       keys: KeySettings) -> dict[str, Any] | None:
    """A signed artifact's card hash is signed too, by the same key (when this machine holds
    it), so `verify` can tell a card the signer published from one edited beside its hash."""
    from foundry.adapters.publishing.attestation import load_key, sign_receipt

    integrity = artifact.get("integrity")
    if not isinstance(integrity, dict) or not integrity.get("signature"):
        return None
    loaded = load_key(keys.dir, keys.passphrase)
    if loaded is None or loaded[1].key_id != integrity["signature"].get("keyId"):
        return None
    return sign_receipt(receipt, loaded[0], loaded[1])


def check_target(target: str) -> None:
    """Refuse, before any work, a target that is neither form or a directory under /proc,
    /sys or /dev."""
    if target.startswith("file://"):
        check_target_dir(_directory_of(target), "target")
    elif target.startswith(HUB_SCHEME):
        parse_hub_target(target)
    else:
        raise InvalidInputError("target", "must be hf://<org>/<repo> or file:///<dir>")


def _directory_of(target: str) -> Path:
    path = unquote(urlsplit(target).path)
    if not path.startswith("/"):
        raise InvalidInputError("target", f"{target}: a file:// target needs an absolute path")
    return Path(path)


def target_url(target: str, hub: HubSettings) -> str:
    """Where people find a publication: the directory's file URI, or the hub repo page."""
    if target.startswith("file://"):
        return Path(unquote(urlsplit(target).path)).resolve().as_uri()
    return f"{hub.base_url}/{parse_hub_target(target).repo}"


def _upload(target: str, folder: Path, hub: HubSettings) -> str:
    if target.startswith("file://"):
        return _publish_to_directory(_directory_of(target), folder)
    if target.startswith(HUB_SCHEME):
        return upload_to_hub(parse_hub_target(target).repo, folder, CARD_FILES, hub=hub)
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
