"""audit/recipes: replay every recipe's events and check what was derived from them (#17 item 3).

For each recipe in the recipe log:

- its events are replayed from the stored rows alone (no snapshot, no cache), each one that
  cannot be decoded named;
- the replayed view row is compared with the stored view row: an event edited after it was
  projected (an author changed in place, say) shows as a difference, field by field;
- each `VersionPinned` records the content hash of the version a run pinned: the replay must
  give the same hash, and the run named in the pin must have recorded it too (the run log is a
  second witness, so a rewrite of the recipe log alone is caught).

What it cannot catch: a rewrite made consistently in both logs and the view (see
docs/security.md, "An attacker with write access to the database").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.commands.lineage import _diff
from foundry.adapters.commands.registry import CommandSpec
from foundry.domain import commands as c
from foundry.domain.errors import RunNotFoundError
from foundry.domain.recipe import Recipe
from foundry.projections.recipes.fold import fold
from foundry.projections.recipes.view import SCHEMA

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices

PAGE = 500


def audit_recipes(_query: c.AuditRecipes, services: CommandServices, _call: Call
                  ) -> dict[str, Any]:
    services.recipe_host.catch_up()  # the view as projected (old events are never re-applied)
    reports = [_audit_one(services, rid) for rid in _recipe_ids(services)]
    bad = [r for r in reports if r["problems"]]
    return {"ok": not bad, "recipes": len(reports), "events": sum(r["events"] for r in reports),
            "problems": bad}


def _recipe_ids(services: CommandServices) -> list[UUID]:
    ids: dict[UUID, None] = {}
    start = 1
    while True:
        page = services.recipes.recorder.select_notifications(start=start, limit=PAGE)
        if not page:
            return list(ids)
        for note in page:
            ids.setdefault(UUID(str(note.originator_id)), None)
        start = page[-1].id + 1


def _audit_one(services: CommandServices, recipe_id: UUID) -> dict[str, Any]:
    problems: list[str] = []
    row: dict[str, Any] | None = None
    aggregate: Any = None
    stored = services.recipes.recorder.select_events(recipe_id)
    for s in stored:
        try:
            event = services.recipes.mapper.to_domain_event(s)
        except Exception as e:  # EventDamagedError names the row
            problems.append(str(e))
            continue
        if isinstance(event, Recipe.VersionPinned) and aggregate is not None:
            problems += _pin_problems(services, event, aggregate.content_hash())
        try:
            aggregate = event.mutate(aggregate)  # type: ignore[attr-defined]
            row = fold(row, event)
        except Exception as e:  # an event that no longer fits the ones before it
            problems.append(f"event {s.originator_version} ({type(event).__name__}) cannot be "
                            f"replayed: {type(e).__name__}")
    view_row = services.recipe_view.get(str(recipe_id))
    if row is not None and view_row is None:
        problems.append("no view row")
    elif row is not None and view_row is not None:
        names = SCHEMA.names
        problems += [f"view differs from replay at {d}" for d in
                     _diff({n: view_row.get(n) for n in names}, {n: row.get(n) for n in names},
                           "")]
    return {"recipeId": str(recipe_id), "events": len(stored), "problems": problems}


def _pin_problems(services: CommandServices, pin: Any, replayed: str) -> list[str]:
    where = f"version {pin.version} pinned at event {pin.originator_version}"
    problems = []
    if pin.recipe_hash != replayed:
        problems.append(f"{where}: pinned hash {pin.recipe_hash}, replay gives {replayed}")
    try:
        run = services.runs.get_run(UUID(pin.run_id))
    except (RunNotFoundError, ValueError):
        return problems  # a pin whose run was never saved (its request failed): no witness
    recorded = run.state.get("recipeHash")
    if recorded != pin.recipe_hash:
        problems.append(f"{where}: run {pin.run_id} recorded {recorded}, the pin says "
                        f"{pin.recipe_hash}")
    return problems


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("audit/recipes", c.AuditRecipes, audit_recipes, "read",
                "replay every recipe's events; compare with the view and the runs' pins"),
)
