"""licenseStrategy (#16 item 8): a derived model is published under its base model's license
unless the recipe overrides it with a reason.

The base's license is read from the source model the run resolved: the `license:` of its
README.md front matter (the hub's model card; the source directory is resolved again and
trusted only when its config.json is the one the run recorded), else a `license` in the
recorded config.json. Unknown (neither says) means nothing to compare: the recipe's own
license stands and the check says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry.domain.errors import InvalidInputError
from foundry.domain.run_state import State
from foundry.domain.values.artifact import ArtifactDocument

if TYPE_CHECKING:
    from foundry.adapters.store.blobs import BlobStore

MAX_CARD_BYTES = 1024 * 1024


def _source_file(blobs: BlobStore, state: State, name: str) -> str | None:
    for record in (state.get("source") or {}).get("files") or []:
        if record.get("path") == name:
            path = blobs.path_of(str(record["sha256"]))
            if path.is_file() and path.stat().st_size <= MAX_CARD_BYTES:
                return path.read_text(encoding="utf-8", errors="replace")
    return None


def card_license(text: str) -> str | None:
    """`license:` of a model card's YAML front matter (the block between the first two
    `---` lines); a list form (`license:\\n- mit`) gives its first entry."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return None
        key, _, value = line.partition(":")
        if key.strip() == "license":
            value = value.strip().strip("'\"")
            if value:
                return value.lower()
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return following.removeprefix("-").strip().strip("'\"").lower() or None
    return None


def _card_beside_source(foundry: Any, state: State) -> str | None:
    """The source's README.md: the blob store keeps only model files of a source (#17), so
    the directory is resolved again, and trusted only if its config.json is the very one the
    run recorded (the same snapshot of the base)."""
    registry = getattr(foundry, "registry", None)
    recorded = {r.get("path"): r.get("sha256") for r in (state.get("source") or {}).get(
        "files") or []}
    if registry is None or "config.json" not in recorded:
        return None
    try:
        directory = Path(registry.source_resolver((state.get("recipe") or {}).get("source")))
    except Exception:
        return None
    config, card = directory / "config.json", directory / "README.md"
    if not config.is_file() or not card.is_file() or card.stat().st_size > MAX_CARD_BYTES:
        return None
    if "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest() != recorded["config.json"]:
        return None
    return card.read_text(encoding="utf-8", errors="replace")


def source_license(foundry: Any, state: State) -> str | None:
    """The base model's license, where its card or config states one."""
    card = _card_beside_source(foundry, state)
    if card and (found := card_license(card)):
        return found
    config = _source_file(foundry.blobs, state, "config.json")
    if config:
        try:
            value = json.loads(config).get("license")
        except (json.JSONDecodeError, AttributeError):
            return None
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    return None


def check_license(foundry: Any, state: State, artifact: ArtifactDocument
                  ) -> dict[str, Any]:
    """Refuse publishing under another license than the base's without an override and a
    reason; returns what was compared (for the publication's record)."""
    base = source_license(foundry, state)
    mine = str(artifact.get("license") or "").lower() or None
    strategy = artifact.get("licenseStrategy") or "inherit_from_source"
    if base is None or base == mine:
        return {"baseLicense": base, "license": mine, "strategy": strategy}
    if strategy == "override" and artifact.get("licenseReason"):
        return {"baseLicense": base, "license": mine, "strategy": strategy,
                "reason": artifact["licenseReason"]}
    raise InvalidInputError(
        "license", f"the base model {(state.get('source') or {}).get('baseModel')} is licensed "
        f"{base}, this derived model says {mine}: with licenseStrategy inherit_from_source "
        f"(the default) set license to {base}, or set licenseStrategy 'override' and "
        "licenseReason in a new recipe version")
