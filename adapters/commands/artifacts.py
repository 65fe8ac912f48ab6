"""artifact/card, artifact/verify, alloy/import, alloy/export: the artifact's files.

These were CLI-only verbs that reached into internals; as commands they are in the Python
API, `foundry exec` and (later) HTTP, and every failure of theirs is an envelope.

Verifying a stored run also checks its events (the `events` link): the artifact is rebuilt
from the run's stored events, as `audit replay` does, and compared with the artifact view's
document and with the alloyHash sealed in the events; each difference is named by its field.
A tampered event then fails `verify` too, not only `audit replay`.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from foundry.adapters.commands.alloy_import import import_alloys
from foundry.adapters.commands.registry import CommandSpec
from foundry.adapters.commands.validation import parse_uuid
from foundry.adapters.store.run_lookup import run_of
from foundry.domain import commands as c
from foundry.domain.errors import InvalidInputError
from foundry.domain.values.artifact import ArtifactDocument

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices
    from foundry.adapters.publishing.attestation import Link

Result = dict[str, Any]
# A published .alloy.json is tens of KB; a file far bigger is not one (or is /dev/zero).
MAX_ALLOY_BYTES = 8 * 1024 * 1024


def render_cards(cmd: c.RenderCards, services: CommandServices, _call: Call) -> Result:
    from foundry.adapters.publishing.cards import card_hash, write_cards
    from foundry.adapters.publishing.publish import publishable_artifact

    run = services.runs.get_run(run_of(services, parse_uuid(cmd.id)))
    artifact = publishable_artifact(run.state)
    out = Path(cmd.out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError("out", f"{out} exists and is not a directory")
    try:
        paths = write_cards(artifact, out)
    except OSError as e:
        raise InvalidInputError("out", f"cannot write the cards into {out}: {e.strerror}") from None
    readme = paths["README.md"].read_text(encoding="utf-8")
    return {"files": {k: str(v) for k, v in paths.items()}, "cardHash": card_hash(readme)}


def verify_artifact(cmd: c.VerifyArtifact, services: CommandServices, _call: Call) -> Result:
    from foundry.adapters.publishing.attestation import verify

    path = Path(cmd.subject)
    readme = Path(cmd.readme) if cmd.readme else None
    blobs = None  # a file stands alone; a stored run's blobs are checked too
    events: Link | None = None  # and a stored run's events
    artifact: ArtifactDocument
    if path.is_file():
        # A file someone hands in: verify's links check what it claims, key by key.
        artifact = cast("ArtifactDocument", _read_json_object(path, "subject"))
        readme = readme or recorded_card(path, artifact)
    else:
        from foundry.adapters.publishing.publish import publishable_artifact
        from foundry.domain.artifact_builder import build_artifact

        state = services.runs.get_run(run_of(services, parse_uuid(cmd.subject, "subject"))).state
        artifact = publishable_artifact(state)
        receipt = build_artifact(state).get("receipt")
        if receipt is not None:
            artifact["receipt"] = receipt
        blobs = services.blobs
        events = events_link(services, str(state["runId"]))
    model_dir = Path(cmd.model_dir) if cmd.model_dir else None
    if model_dir is not None and not model_dir.is_dir():
        raise InvalidInputError("modelDir", f"{model_dir} is not a directory")
    gguf_dir = Path(cmd.gguf_dir) if cmd.gguf_dir else None
    if gguf_dir is not None and (model_dir is None or not gguf_dir.is_dir()):
        raise InvalidInputError("ggufDir", f"{gguf_dir} is not a directory" if model_dir
                                else "goes with modelDir (the model's own folder)")
    links = verify(artifact, model_dir=model_dir, gguf_dir=gguf_dir, readme=readme,
                   trusted_key_ids=set(cmd.trust) or None, blobs=blobs,
                   require_signature=cmd.require_signature)
    if events is not None:
        links.append(events)
    return {"ok": all(link.ok for link in links),
            "links": [{"name": link.name, "ok": link.ok, "status": link.status,
                       "expected": link.expected, "found": link.found, "detail": link.detail}
                      for link in links]}


def events_link(services: CommandServices, run_id: str) -> Link:
    """The run's artifact rebuilt from its stored events against the view's document and the
    sealed alloyHash (what `audit replay` compares); a damaged event is `event_damaged`."""
    from foundry.adapters.publishing.attestation import Link
    from foundry.domain.artifact_builder import alloy_hash, artifact_id
    from foundry.projections.artifacts.view import fold
    from foundry.projections.quarantine import QuarantinedRecordError

    services.artifact_host.catch_up()
    row: dict[str, Any] | None = None
    for stored in services.runs.recorder.select_events(parse_uuid(run_id, "subject")):
        row = fold(row, services.runs.mapper.to_domain_event(stored))
    if row is None:  # get_run found the run: it has events
        msg = f"run {run_id} has no events"
        raise LookupError(msg)
    replayed = row["doc"]
    problems: list[str] = []
    try:
        view_row = services.artifact_view.get(artifact_id(run_id))
    except QuarantinedRecordError as e:  # the view set one of its events aside
        view_row, problems = None, [str(e)]
    if view_row is None and not problems:
        problems.append("the artifact view has no row for this run")
    elif view_row is not None:
        problems += [f"{d} (view vs events)" for d in differences(view_row["doc"], replayed)]
    sealed = (row.get("state") or {}).get("alloyHash")
    if sealed and alloy_hash(replayed) != sealed:
        problems.append(f"alloyHash: sealed {sealed}, the events give {alloy_hash(replayed)}")
    return Link("events", not problems, sealed or "the view's document",
                "; ".join(problems[:20]) or "as recorded",
                "the view and the sealed alloyHash match the run's events" if not problems
                else "the run's events differ from what was recorded")


def differences(view: Any, events: Any, path: str = "") -> list[str]:
    """Each field path at which two documents differ, with both values."""
    if isinstance(view, dict) and isinstance(events, dict):
        return [d for k in sorted(set(view) | set(events))
                for d in differences(view.get(k), events.get(k), f"{path}.{k}" if path else k)]
    if isinstance(view, list) and isinstance(events, list) and len(view) == len(events):
        return [d for i, (a, b) in enumerate(zip(view, events, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if view == events else [f"{path or '<root>'}: view {view!r}, events {events!r}"]


def recorded_card(path: Path, artifact: ArtifactDocument) -> Path | None:
    """The card next to a published artifact file: the one its receipt recorded a hash of,
    by the name the receipt gives (publishing writes it as README.md beside the alloy). An
    artifact whose receipt records no card has none to check: a README.md that merely sits
    next to it (an export into a project folder) is not its card and is never read."""
    receipt = artifact.get("receipt")
    if not isinstance(receipt, dict) or not receipt.get("cardHash"):
        return None
    name = receipt.get("cardFile") or "README.md"
    if not isinstance(name, str) or Path(name).name != name:
        raise InvalidInputError("receipt.cardFile", f"{name!r} must be a plain file name")
    card = path.with_name(name)
    return card if card.is_file() else None


def _read_json_object(path: Path, field: str) -> dict[str, Any]:
    """A JSON object from a regular file of at most MAX_ALLOY_BYTES."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ALLOY_BYTES:
            raise InvalidInputError(field, f"{path} must be a regular file of at most "
                                    f"{MAX_ALLOY_BYTES} bytes")
        with path.open("rb") as f:
            raw = f.read(MAX_ALLOY_BYTES + 1)
    except OSError as e:
        raise InvalidInputError(field, f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InvalidInputError(field, f"{path} is not a JSON document: {e}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(field, f"{path} must hold a JSON object (an artifact), got "
                                f"{type(data).__name__}")
    return data


def export_alloy(cmd: c.ExportAlloy, services: CommandServices, _call: Call) -> Result:
    from foundry.adapters.publishing.alloy_io import export_alloy as export

    alloy = export(services, parse_uuid(cmd.id))
    if cmd.out is None:
        return {"alloy": alloy}
    from foundry.adapters.publishing.safe_files import writable_dir, write_atomic

    out = Path(cmd.out)
    text = json.dumps(alloy, indent=2, ensure_ascii=False) + "\n"
    # Atomic and never through a symlink planted at `out`; the directory must exist.
    write_atomic(writable_dir(out.parent, "out", create=False), out.name,
                 text.encode("utf-8"), field="out")
    return {"file": cmd.out}


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("artifact/card", c.RenderCards, render_cards, "read",
                "render README.md and MODEL_METHODOLOGY.md of an artifact"),
    CommandSpec("artifact/verify", c.VerifyArtifact, verify_artifact, "read",
                "check alloyHash, weights, card and signature"),
    CommandSpec("alloy/import", c.ImportAlloys, import_alloys, "write",
                "import .alloy.json files as recipes (and runs)"),
    CommandSpec("alloy/export", c.ExportAlloy, export_alloy, "read",
                "a recipe or artifact as .alloy.json"),
)
