"""A chain's base_model (issue #14 item 5): when a run forged from another Foundry artifact,
the card's `base_model` is the Hub repo that artifact was published to.

A run's source is a Foundry artifact when the source folder it resolved holds that artifact's
`.alloy.json` (as a `file://` publication of it leaves one) **and** every model file of the
artifact's last stage, with the hash its provenance records: the alloy alone would let any
folder claim any parent. The parent's repo comes from its
Published events (the newest `hf://` one); a parent never published to a Hub leaves the
original model id (the parent's own base, followed up its chain) and a line that says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.publishing.cards import HUB_ID
from foundry.domain import run_state
from foundry.domain.errors import RunNotFoundError
from foundry.domain.values.artifact import ArtifactDocument

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices

# A chain longer than this is cut: a cycle cannot happen (a run cannot contain its own
# output), but a damaged store must not loop.
MAX_DEPTH = 32


@dataclass(frozen=True)
class ChainBase:
    """What the card of a run forged from a Foundry artifact says about its base."""

    parent_artifact: str
    parent_run: str
    base_model: str | None
    """The parent's Hub repo; unpublished, the chain's original Hub id (None if it has none)."""
    published: bool
    note: str
    """One line for the README naming the parent artifact and where it is."""


def chain_base(services: PublishServices, state: run_state.State,
               *, hub_url: str, depth: int = 0) -> ChainBase | None:
    """The parent artifact of the run in `state`, if its source is one; else None."""
    parent = _parent_state(services, state)
    if parent is None or depth >= MAX_DEPTH:
        return None
    artifact_id = _artifact_id(parent)
    repo = _published_repo(parent)
    if repo is not None:
        return ChainBase(artifact_id, parent["runId"], repo, published=True,
                         note=f"Forged from Foundry artifact `{artifact_id}`, published as "
                              f"[{repo}]({hub_url}/{repo}).")
    above = chain_base(services, parent, hub_url=hub_url, depth=depth + 1)
    original = above.base_model if above else _hub_id(parent)
    named = f": base_model names its original source `{original}`" if original else ""
    return ChainBase(artifact_id, parent["runId"], original, published=False,
                     note=f"Forged from Foundry artifact `{artifact_id}` (run "
                          f"`{parent['runId']}`), which was not published to a Hub{named}.")


def _parent_state(services: PublishServices, state: run_state.State) -> run_state.State | None:
    source = state.get("source") or {}
    files = {f["path"]: f["sha256"] for f in source.get("files") or []}
    for path, sha in sorted(files.items()):
        if "/" in path or not path.endswith(".alloy.json"):
            continue
        run_id = _run_named_by(services, sha)
        if run_id is None or run_id == state["runId"]:
            continue
        parent = _run_state(services, run_id)
        if parent is not None and _holds_model_of(files, parent):
            return parent
    return None


def _run_named_by(services: PublishServices, sha256: str) -> str | None:
    """The run id an alloy blob's provenance names; None for anything unreadable."""
    try:
        doc: Any = json.loads(services.blobs.path_of(sha256).read_bytes())
        run_id = doc["provenance"]["runId"]
        return str(UUID(str(run_id)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_state(services: PublishServices, run_id: str) -> run_state.State | None:
    try:
        return services.runs.get_run(UUID(run_id)).state
    except RunNotFoundError:
        return None  # an alloy from another store: no events here to follow


def _holds_model_of(files: dict[str, str], parent: run_state.State) -> bool:
    stages = run_state.completed_stages(parent)
    model = [f for f in stages[-1]["files"] if f["role"] == "model"] if stages else []
    return bool(model) and all(files.get(f["path"]) == f["sha256"] for f in model)


def _published_repo(parent: run_state.State) -> str | None:
    from foundry.adapters.publishing.gguf_repo import HUB_SCHEME, parse_hub_target

    for pub in reversed(parent.get("publications") or []):
        target = str(pub.get("target") or "")
        if target.startswith(HUB_SCHEME):
            return parse_hub_target(target).repo
    return None


def _hub_id(state: run_state.State) -> str | None:
    base = ((state.get("recipe") or {}).get("source") or {}).get("baseModel")
    return base if isinstance(base, str) and HUB_ID.match(base) else None


def _artifact_id(state: run_state.State) -> str:
    from foundry.domain.artifact_builder import artifact_id

    return str(artifact_id(state["runId"]))


def with_base_model(readme: str, artifact: ArtifactDocument, base_model: str) -> str:
    """The README with its front matter's base_model set to `base_model` (and the relation
    the stages give), parsed and written back by huggingface_hub's ModelCard, the same
    `to_yaml` that wrote it; the rest of the card is left byte for byte."""
    from huggingface_hub import ModelCard

    from foundry.adapters.publishing.cards import base_model_relation

    data = ModelCard(readme, ignore_metadata_errors=False).data
    data.base_model = base_model  # type: ignore[attr-defined]  # a ModelCardData field
    relation = base_model_relation(artifact)
    if relation:
        data.base_model_relation = relation  # type: ignore[attr-defined]  # metadata extra
    return _replace_front_matter(readme, data.to_yaml())


def _replace_front_matter(readme: str, yaml: str) -> str:
    head, sep, body = readme.partition("\n---\n")
    if not head.startswith("---\n") or not sep:
        return f"---\n{yaml}\n---\n\n{readme}"  # a card without front matter gets one
    return f"---\n{yaml}\n---\n{body}"
