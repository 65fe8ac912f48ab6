"""The ForgeArtifact as a pure function of a run's state, and its alloyHash.

The artifact is never authored: the view, `audit replay` and sealing all call `build_artifact`
on the state folded from the same events, so they agree by construction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast
from uuid import NAMESPACE_URL, uuid5

from foundry.domain import run_state
from foundry.domain.hashing import content_hash
from foundry.domain.values.artifact import RECIPE_SNAPSHOT_FIELDS, ArtifactDocument

# Not part of the hashed content: the hash itself, what publication and signing add later,
# and the lifecycle status the view shows next to the artifact.
UNHASHED_FIELDS = frozenset({"alloyHash", "receipt", "integrity", "status"})


def artifact_id(run_id: str) -> str:
    """One artifact per run, with an id distinct from the run's and the recipe's."""
    return str(uuid5(NAMESPACE_URL, f"foundry/artifact/{run_id}"))


def alloy_hash(artifact: Mapping[str, Any]) -> str:
    """`sha256:` + SHA-256 of the RFC 8785 form of the artifact without UNHASHED_FIELDS."""
    return content_hash({k: v for k, v in artifact.items() if k not in UNHASHED_FIELDS})


def build_artifact(state: run_state.State) -> ArtifactDocument:
    if state.get("imported"):
        return _imported_artifact(state)
    recipe = state["recipe"]
    stages = run_state.completed_stages(state)
    metrics = _merged_metrics(stages)
    started = state["attempts"][0]["startedAt"] if state["attempts"] else None
    duration = _minutes(started, state["sealedAt"])
    verified, dropped = hardware_verified(state, stages)
    artifact: dict[str, Any] = {
        "id": artifact_id(state["runId"]),
        "recipeId": state["recipeId"],
        "recipeVersion": state["recipeVersion"],
        "recipeName": recipe.get("name"),
        **{f: recipe[f] for f in RECIPE_SNAPSHOT_FIELDS if f in recipe},
        "forgedAt": state["sealedAt"],
        "hardwareNode": state["hardwareNode"],
        "durationMinutes": duration,
        "hardwareVerified": verified,
        "results": _results(state, metrics, duration),
        "provenance": _provenance(state, stages),
    }
    if dropped:  # said where a reader of the provenance looks, never silently lost
        artifact["provenance"]["hardwareClaimsDropped"] = dropped
    if "params" in metrics:
        artifact["forgedParamsB"] = round(metrics["params"] / 1e9, 6)
    if "activeParams" in metrics:  # a mixture of experts: what one token goes through
        artifact["activeParamsB"] = round(metrics["activeParams"] / 1e9, 6)
    if recipe.get("rehearsal"):  # a scale-model rehearsal: what it changed, never publishable
        artifact["rehearsal"] = recipe["rehearsal"]
    if state["alloyHash"]:
        artifact["alloyHash"] = state["alloyHash"]
    artifact["receipt"] = _receipt(state)
    artifact["integrity"] = state.get("integrity")
    # The one place a document becomes an ArtifactDocument: its keys are the ones above.
    return cast("ArtifactDocument", {k: v for k, v in artifact.items() if v is not None})


def _device_kind(device: Any) -> str:
    """`cuda:1` -> `cuda`: a claim names the kind of device a stage ran on."""
    return str(device or "").split(":", 1)[0].strip().lower()


def hardware_verified(state: run_state.State, stages: list[dict[str, Any]]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the stages' hardwareVerified claims for devices the run used, the others).

    A stage ran on the device of the attempt that ran it (recorded by the orchestrator in
    `Started`, not claimed by the executor), and on its worker's CPU, which every worker has
    and llama.cpp falls back to. A claim for any other device is not the run's to make: it is
    kept out of hardwareVerified and listed in the provenance instead, never invented.
    """
    devices = {a["attempt"]: _device_kind(a.get("device")) for a in state["attempts"]}
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for record in stages:
        used = {"cpu", devices.get(record.get("attempt"), "cpu")}
        for claim in record["metrics"].get("hardwareVerified", []):
            if _device_kind(claim.get("device")) in used:
                kept.append(claim)
            else:
                dropped.append({"cycle": record["cycle"], "index": record["index"],
                                "device": claim.get("device"), "format": claim.get("format"),
                                "why": f"the stage ran on {', '.join(sorted(used))}"})
    return kept, dropped


def _receipt(state: run_state.State) -> dict[str, Any] | None:
    """What publication added (outside the hash): where, when, with which card."""
    pubs = state.get("publications") or []
    if not pubs:
        return None
    return {
        "publications": [{"target": p["target"], "url": p["url"],
                          "publishedAt": p["publishedAt"]} for p in pubs],
        "alloyHash": state["alloyHash"],
        "cardHash": pubs[-1]["cardHash"],
        "issuedAt": pubs[0]["publishedAt"],
    }


def _merged_metrics(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Later stages win: the last eval's perplexity, the last transform's parameter count."""
    merged: dict[str, Any] = {}
    for record in stages:
        merged.update(record["metrics"])
    return merged


def _results(state: run_state.State, m: dict[str, Any], duration: float | None) -> dict[str, Any]:
    keys = ("baselinePerplexity", "finalPerplexity", "improvementPct", "finalSizeGb")
    results: dict[str, Any] = {
        "completedAt": state["sealedAt"],
        "durationMinutes": duration,
        **{k: m[k] for k in keys if k in m},
        "finalParams": m.get("params"),
        "benchmarks": state["benchmarks"],
        "samples": m.get("samples", []),
    }
    return {k: v for k, v in results.items() if v is not None}


def _provenance(state: run_state.State, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runId": state["runId"],
        "recipeRevision": state["recipeRevision"],
        "recipeHash": state["recipeHash"],
        "requestedBy": state["requestedBy"],
        "requestedAt": state["requestedAt"],
        "source": state["source"],
        "attempts": state["attempts"],
        "gate": state["gate"],
        "stages": [
            {k: r.get(k) for k in ("cycle", "index", "type", "config", "inputHash", "outputHash",
                                   "files", "metrics", "notes", "seconds", "startedAt",
                                   "completedAt", "attempt")}
            for r in stages
        ],
    }


def _minutes(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(delta.total_seconds() / 60, 4)


def _imported_artifact(state: run_state.State) -> ArtifactDocument:
    """An artifact forged elsewhere: its fields exactly as imported, our ids, and a
    provenance that says so (nothing pretends it ran here)."""
    recipe, imported = state["recipe"], state["imported"]
    if "recipeId" in imported["fields"]:
        # Foundry's own artifact file (a legacy alloy's run half never has recipeId): the
        # same artifact as in the store it was forged in, field for field, so that its
        # alloyHash still verifies. Where it came from is in the run's Imported event.
        return cast("ArtifactDocument", copy.deepcopy(imported["fields"]))
    artifact: dict[str, Any] = {
        "id": artifact_id(state["runId"]),
        "recipeId": state["recipeId"],
        "recipeVersion": state["recipeVersion"],
        "recipeName": recipe.get("name"),
        **{f: recipe[f] for f in RECIPE_SNAPSHOT_FIELDS if f in recipe},
        **imported["fields"],
        "provenance": {
            "imported": True, "runId": state["runId"], "sourceFile": imported["sourceFile"],
            "fileSha256": imported["fileSha256"], "importedAt": imported["importedAt"],
            "recipeRevision": state["recipeRevision"], "recipeHash": state["recipeHash"],
        },
    }
    return cast("ArtifactDocument", {k: v for k, v in artifact.items() if v is not None})
