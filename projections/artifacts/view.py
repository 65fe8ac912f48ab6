"""The artifact view. Each row keeps the folded run state (JSON) and the artifact built from it.

The fold is `foundry.domain.run_state.apply` followed by
`foundry.domain.artifact_builder.build_artifact`: the same code the run aggregate and
`audit replay` use, so the view cannot drift from the events.
"""

from __future__ import annotations

from typing import Any

from foundry.domain import run_state
from foundry.domain.artifact_builder import artifact_id, build_artifact
from foundry.domain.forge_run import EVENT_TOPICS, ForgeRun
from foundry.projections.document_view import PostgresDocumentView, SQLiteDocumentView, ViewSchema

TOPICS = tuple(t for t in EVENT_TOPICS if t != ForgeRun.StageProgressed.TOPIC)

_BASE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def event_fields(event: Any) -> dict[str, Any]:
    return {k: v for k, v in event.__dict__.items() if k not in _BASE}


def fold(row: dict[str, Any] | None, event: Any) -> dict[str, Any]:
    if isinstance(event, ForgeRun.Requested):
        state = run_state.initial({**event_fields(event), "run_id": str(event.originator_id)})
    else:
        assert row is not None, f"run event {type(event).__name__} before Requested"
        state = run_state.apply(row["state"], type(event).__name__, event_fields(event))
    return row_from_state(state)


def row_from_state(state: run_state.State) -> dict[str, Any]:
    doc = build_artifact(state)
    return {
        "id": artifact_id(state["runId"]), "run_id": state["runId"],
        "recipe_id": state["recipeId"], "recipe_version": state["recipeVersion"],
        "hardware_node": state["hardwareNode"], "status": state["status"],
        "requested_at": state["requestedAt"], "forged_at": state["sealedAt"],
        "alloy_hash": state["alloyHash"], "state": state, "doc": doc,
    }


def to_item(row: dict[str, Any]) -> dict[str, Any]:
    """The artifact, plus the run's lifecycle status (read-only, not hashed)."""
    return {**row["doc"], "status": row["status"]}


SCHEMA = ViewSchema(
    name="artifacts",
    columns=(
        ("id", "text"), ("run_id", "text"), ("recipe_id", "text"), ("recipe_version", "text"),
        ("hardware_node", "text"), ("status", "text"), ("requested_at", "text"),
        ("forged_at", "text"), ("alloy_hash", "text"), ("state", "json"), ("doc", "json"),
    ),
    fold=fold,
    key_of=lambda e: artifact_id(str(e.originator_id)),
    query_columns={
        "id": ("id", "text"),
        "provenance.runId": ("run_id", "text"),
        "runId": ("run_id", "text"),
        "recipeId": ("recipe_id", "text"),
        "recipeVersion": ("recipe_version", "text"),
        "hardwareNode": ("hardware_node", "text"),
        "status": ("status", "text"),
        "requestedAt": ("requested_at", "text"),
        "forgedAt": ("forged_at", "text"),
        "alloyHash": ("alloy_hash", "text"),
    },
    indexed=("recipe_id", "hardware_node", "status", "forged_at", "run_id"),
)


class ArtifactViewSQLite(SQLiteDocumentView):
    schema = SCHEMA


class ArtifactViewPostgres(PostgresDocumentView):
    schema = SCHEMA
