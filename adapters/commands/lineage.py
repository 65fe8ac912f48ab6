"""Lineage and audit: what led to an artifact, and does replaying its events reproduce it?

`lineage/report` answers, for an artifact, run or recipe id: the recipe, the edits that led
to the pinned version, the parent chain, every run with its hardware, software and stages
(times, input -> output hashes, metrics) and the artifacts. `audit/replay` rebuilds a run's
artifact from its stored events alone and compares it with the view and the sealed alloyHash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.commands.data import data_history, data_list
from foundry.adapters.commands.registry import CommandSpec
from foundry.adapters.commands.validation import parse_uuid
from foundry.domain import commands as c
from foundry.domain.artifact_builder import alloy_hash, artifact_id
from foundry.domain.errors import InvalidInputError, RecipeNotFoundError
from foundry.projections.artifacts.view import fold

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices

Result = dict[str, Any]


def lineage_report(query: c.LineageQuery, services: CommandServices, call: Call) -> Result:
    subject = parse_uuid(query.id)
    kind, recipe_id, run_ids = _subject(services, subject, call)
    recipe = services.recipes.get_recipe(recipe_id)
    runs = [_run_lineage(services, r) for r in run_ids]
    pinned_revisions = [r["recipeRevision"] for r in runs]
    upto = max(pinned_revisions) if kind != "recipe" and pinned_revisions else recipe.revision
    history = c.EntityHistory(collection=c.RECIPES, id=str(recipe_id), limit=c.MAX_LIMIT)
    edits = data_history(history, services, call)["items"]
    return {
        "subject": {"kind": kind, "id": query.id},
        "recipe": {"id": str(recipe_id), "name": recipe.data.get("name"),
                   "currentVersion": recipe.recipe_version, "currentRevision": recipe.revision,
                   "pinnedVersions": recipe.pinned_versions},
        "edits": [e for e in edits if e["revision"] <= upto],
        "parents": _parents(services, recipe.data.get("parentRecipeId")),
        "runs": runs,
    }


def _subject(services: CommandServices, subject: UUID, call: Call
             ) -> tuple[str, UUID, list[UUID]]:
    """(kind, recipe id, run ids) for an artifact, run or recipe id."""
    if subject in services.runs.repository:
        run = services.runs.get_run(subject)
        return "run", UUID(run.state["recipeId"]), [subject]
    found = data_list(c.ListEntities(collection=c.ARTIFACTS, filter={"id": str(subject)},
                                     limit=1), services, call)["items"]
    if found:
        run_id = UUID(found[0]["provenance"]["runId"])
        return "artifact", UUID(found[0]["recipeId"]), [run_id]
    if subject in services.recipes.repository:
        query = c.ListEntities(collection=c.ARTIFACTS, limit=c.MAX_LIMIT,
                               filter={"recipeId": str(subject)},
                               order_by=[c.OrderBy(field="requestedAt")])
        items = data_list(query, services, call)["items"]
        return "recipe", subject, [UUID(a["provenance"]["runId"]) for a in items]
    raise InvalidInputError("id", f"{subject} is no artifact, run or recipe in this store")


def _parents(services: CommandServices, parent_id: str | None) -> list[Result]:
    """The parent chain. A parentRecipeId naming no recipe here (the parent lives in another
    store, or an import carried a stale id) ends the chain with an entry that says so and
    names the child holding it: the report is still given (#17 item 12)."""
    chain: list[Result] = []
    seen: set[str] = set()
    child = "the recipe"
    while parent_id and parent_id not in seen:
        seen.add(parent_id)
        try:
            parent = services.recipes.get_recipe(UUID(str(parent_id)))
        except (RecipeNotFoundError, ValueError):
            chain.append({"id": str(parent_id), "name": None, "version": None, "missing": True,
                          "problem": f"parentRecipeId of {child} names no recipe in this "
                                     "store"})
            break
        chain.append({"id": parent_id, "name": parent.data.get("name"),
                      "version": parent.recipe_version})
        child, parent_id = f"recipe {parent_id}", parent.data.get("parentRecipeId")
    return chain


def _run_lineage(services: CommandServices, run_id: UUID) -> Result:
    s = services.runs.get_run(run_id).state
    stages = sorted(s["stages"].values(), key=lambda r: (r["cycle"], r["index"]))
    return {
        "runId": str(run_id), "artifactId": artifact_id(str(run_id)), "status": s["status"],
        "recipeVersion": s["recipeVersion"], "recipeRevision": s["recipeRevision"],
        "recipeHash": s["recipeHash"], "hardwareNode": s["hardwareNode"],
        "requestedBy": s["requestedBy"], "requestedAt": s["requestedAt"],
        "attempts": s["attempts"], "source": _source(s["source"]),
        "stages": [{**{k: r.get(k) for k in ("cycle", "index", "type", "status", "startedAt",
                                             "completedAt", "seconds", "inputHash", "outputHash",
                                             "metrics", "notes", "error", "fingerprint",
                                             "reusedFrom")},
                    "outputFiles": _produced(r)} for r in stages],
        "benchmarks": s["benchmarks"], "gate": s["gate"], "alloyHash": s["alloyHash"],
        "sealedAt": s["sealedAt"], "failure": s["failure"],
    }


def _produced(row: Result) -> list[Result]:
    """The files a stage wrote besides the model it hands on: a quant stage's GGUF tiers (its
    outputHash is the model it passed through, the same as its inputHash), loss curves."""
    return [{"path": f["path"], "sha256": f["sha256"], "size": f["size"]}
            for f in row.get("files") or [] if f.get("role") == "output"]


def _source(source: Result | None) -> Result | None:
    if source is None:
        return None
    return {"baseModel": source["baseModel"], "sourceHash": source["sourceHash"]}


def audit_replay(query: c.ReplayQuery, services: CommandServices, _call: Call) -> Result:
    run_id = parse_uuid(query.run_id, "runId")
    services.runs.get_run(run_id)  # not found -> a clear error
    services.artifact_host.catch_up()  # the view as projected (old events are never re-applied)
    row: dict[str, Any] | None = None
    problems: list[str] = []
    events = services.runs.recorder.select_events(run_id)
    for stored in events:
        try:
            event = services.runs.mapper.to_domain_event(stored)
        except Exception as e:
            problems.append(f"event {stored.originator_version} cannot be decoded: {e}")
            continue
        row = fold(row, event)
    assert row is not None
    replayed = row["doc"]
    view_row = services.artifact_view.get(artifact_id(str(run_id)))
    stored_doc = view_row["doc"] if view_row else None
    differences = _diff(stored_doc, replayed, "") if stored_doc is not None else ["no view row"]
    sealed = row["state"]["alloyHash"]
    recomputed = alloy_hash(replayed) if sealed else None
    if sealed and recomputed != sealed:
        problems.append(f"alloyHash: sealed {sealed}, replay gives {recomputed}")
    problems += [f"view differs from replay at {d}" for d in differences]
    # Every blob the artifact references, re-hashed (streamed): a flipped byte is named.
    from foundry.adapters.publishing.attestation import provenance_records

    problems += [str(e) for e in services.blobs.check_records(provenance_records(replayed))]
    # Stages whose outputs came from another run by fingerprint (StageReused), as replayed.
    reused = [{"cycle": r["cycle"], "index": r["index"], "type": r["type"],
               "fingerprint": r.get("fingerprint"), "from": r["reusedFrom"]}
              for r in sorted(row["state"]["stages"].values(),
                              key=lambda r: (r["cycle"], r["index"])) if r.get("reusedFrom")]
    return {"runId": str(run_id), "ok": not problems, "problems": problems,
            "sealedAlloyHash": sealed, "replayedAlloyHash": recomputed, "events": len(events),
            "reusedStages": reused}


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k),
                                                                   f"{path}.{k}" if path else k)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path or '<root>'}: view {a!r} != replay {b!r}"]


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("lineage/report", c.LineageQuery, lineage_report, "read",
                "what led to an artifact, run or recipe"),
    CommandSpec("audit/replay", c.ReplayQuery, audit_replay, "read",
                "replay a run's events and compare with its artifact"),
)
