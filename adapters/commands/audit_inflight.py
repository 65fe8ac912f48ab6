"""audit/in-flight: what to settle before publishing is locked down to recipes (the seed's
Phase-3.5 audit).

Two lists, as JSON and as Markdown (`foundry audit in-flight [--json]`):
- every run not completed: status, owner (host, pid, attempt, alive), node, attempts, age
  since it was requested, and its last event (type and time);
- every imported alloy that has no recipe authored here behind it (its run was imported,
  never forged from a recipe of this store) or no runs at all (an imported recipe nobody has
  forged).
Read from the views (caught up) and each listed run's own events; nothing is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.commands.registry import CommandSpec
from foundry.domain import commands as c

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices

Result = dict[str, Any]
PAGE = c.MAX_LIMIT
IMPORT_RECORD = "foundryImport"  # alloy_io.IMPORT_RECORD: the mark of an imported recipe
IMPORTED_NODE = "imported"  # alloy_io.IMPORTED_NODE: the node of an imported run


def audit_in_flight(_query: c.AuditInFlight, services: CommandServices, call: Call) -> Result:
    now = datetime.now(UTC)
    # The view's hardwareNode and status columns are the run's own: a filter, not a scan.
    pending = [_pending(services, a, now) for a in _all(
        services, call, c.ARTIFACTS, {"status": {"$ne": "completed"}})]
    recipes = {r["id"]: r for r in _all(services, call, c.RECIPES, None, include_archived=True)}
    imported_runs = [_imported_run(a, recipes) for a in _all(
        services, call, c.ARTIFACTS, {"hardwareNode": IMPORTED_NODE})]
    backed = {r["recipeId"] for r in imported_runs}
    unforged = [{"recipeId": rid, "name": r.get("name"), "version": r.get("version"),
                 "sourceFile": (r.get(IMPORT_RECORD) or {}).get("file"),
                 "archived": r.get("archived", False)}
                for rid, r in sorted(recipes.items())
                if rid not in backed and _is_imported_recipe(services, r)
                and not _has_runs(services, call, rid)]
    return {"runsNotCompleted": pending, "importedWithoutRecipe": imported_runs,
            "importedWithoutRuns": unforged,
            "clear": not (pending or imported_runs or unforged), "at": now.isoformat()}


def _has_runs(services: CommandServices, call: Call, recipe_id: str) -> bool:
    from foundry.adapters.commands.data import data_count

    found = data_count(c.CountEntities(collection=c.ARTIFACTS, filter={"recipeId": recipe_id}),
                       services, call)
    return bool(found["count"])


def _all(services: CommandServices, call: Call, collection: str,
         where: dict[str, Any] | None, *, include_archived: bool = False) -> list[Result]:
    """Every matching item of a collection, page by page (keyset cursor)."""
    from foundry.adapters.commands.data import data_list

    items: list[Result] = []
    cursor = None
    while True:
        page = data_list(c.ListEntities(collection=collection, filter=where, limit=PAGE,
                                        cursor=cursor, include_archived=include_archived,
                                        skip_count=True), services, call)
        items += page["items"]
        cursor = page["nextCursor"]
        if not cursor:
            return items


def _pending(services: CommandServices, artifact: Result, now: datetime) -> Result:
    from foundry.adapters.commands.forge import _owner

    run_id = UUID(str(artifact["provenance"]["runId"]))
    run = services.runs.get_run(run_id)
    state = run.state
    last = services.runs.recorder.select_events(run_id, desc=True, limit=1)
    event: Any = services.runs.mapper.to_domain_event(last[0]) if last else None
    requested = datetime.fromisoformat(state["requestedAt"])
    return {
        "runId": str(run_id), "recipeId": state["recipeId"],
        "recipeName": state["recipe"].get("name"), "recipeVersion": state["recipeVersion"],
        "status": run.status, "node": state["hardwareNode"],
        "owner": _owner(services, run_id, state), "attempts": len(state["attempts"]),
        "ageSeconds": round((now - requested).total_seconds(), 1),
        "lastEvent": None if event is None else {
            "type": type(event).__name__, "at": event.timestamp.isoformat()},
        "requestedBy": state["requestedBy"],
    }


def _imported_run(artifact: Result, recipes: dict[str, Result]) -> Result:
    recipe = recipes.get(str(artifact.get("recipeId")))
    return {"runId": (artifact.get("provenance") or {}).get("runId"),
            "artifactId": artifact["id"], "recipeId": artifact.get("recipeId"),
            "recipeName": artifact.get("recipeName"),
            "recipe": "missing" if recipe is None else (
                "archived" if recipe.get("archived") else "imported with the file")}


def _is_imported_recipe(services: CommandServices, recipe: Result) -> bool:
    if IMPORT_RECORD in recipe:
        return True
    # An artifact-form import keeps no import record: its Created event says so.
    history = services.recipes.recorder.select_events(UUID(recipe["id"]), limit=1)
    if not history:
        return False
    created = services.recipes.mapper.to_domain_event(history[0])
    return str(getattr(created, "reason", "")).startswith("imported from")


def render_markdown(result: Result) -> str:
    lines = ["# In-flight audit", "", f"At {result['at']}.", ""]
    if result["clear"]:
        return "\n".join([*lines, "Nothing to settle: every run completed, every imported "
                          "alloy has a recipe and a run.", ""])
    lines += ["## Runs not completed", ""]
    if result["runsNotCompleted"]:
        lines += ["| run | recipe | status | node | owner | attempts | age (s) | last event |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["runsNotCompleted"]:
            owner = r["owner"] or {}
            who = f"{owner.get('host')}:{owner.get('pid')}" if owner else "none"
            if owner.get("alive") is False:
                who += " (gone)"
            last = r["lastEvent"] or {}
            lines.append(f"| {r['runId']} | {r['recipeName']} {r['recipeVersion']} | "
                         f"{r['status']} | {r['node']} | {who} | {r['attempts']} | "
                         f"{r['ageSeconds']} | {last.get('type')} {last.get('at')} |")
    else:
        lines.append("None.")
    lines += ["", "## Imported alloys without a recipe authored here", ""]
    lines += [f"- {r['recipeName']}: run {r['runId']} (recipe {r['recipeId']}: {r['recipe']})"
              for r in result["importedWithoutRecipe"]] or ["None."]
    lines += ["", "## Imported recipes never forged", ""]
    lines += [f"- {r['name']} {r['version']} ({r['recipeId']}"
              + (f", from {r['sourceFile']}" if r["sourceFile"] else "")
              + (", archived" if r["archived"] else "") + ")"
              for r in result["importedWithoutRuns"]] or ["None."]
    return "\n".join([*lines, ""])


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("audit/in-flight", c.AuditInFlight, audit_in_flight, "read",
                "runs not completed and imported alloys without recipe or runs"),
)
