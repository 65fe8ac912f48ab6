"""Continuum's shipped forge/run call: snake_case `{recipe: <full ForgeRecipe>, hardware_node,
...}` instead of `{recipeId, hardwareNode}`. The recipe is upserted first (the same id and
content twice records nothing: data/upsert makes no event for no change), then run; the
answer is the run's envelope with the ForgeArtifact it produced (docs/http.md, "Continuum")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from foundry.adapters.commands.bus import failure
from foundry.domain.commands import ARTIFACTS, RECIPES
from foundry.domain.errors import InvalidInputError

Execute = Callable[[str, Any], dict[str, Any]]


def is_continuum_call(command: str, params: Any) -> bool:
    return command == "forge/run" and isinstance(params, dict) and "recipe" in params


def continuum_forge_run(params: dict[str, Any], execute: Execute) -> dict[str, Any]:
    """Upsert `params['recipe']`, run it with the other params, attach the artifact.
    `execute` is the caller's (it stamps the principal and checks nothing else)."""
    recipe = params["recipe"]
    rest = {k: v for k, v in params.items() if k != "recipe"}
    if "recipe_id" in rest or "recipeId" in rest:
        return _invalid("recipe", "give either recipe (the whole ForgeRecipe) or "
                        "recipeId, not both")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("id"), str):
        return _invalid("recipe.id", "the recipe must be a JSON object carrying its "
                        "id as a string")
    upsert = execute("data/upsert", {"collection": RECIPES, "entity": recipe})
    if not upsert.get("success"):
        return upsert
    ran = execute("forge/run", {**rest, "recipeId": recipe["id"]})
    saved = {"id": recipe["id"], "created": upsert.get("created", False),
             "revision": upsert.get("newRevision"),
             "changed": bool(upsert.get("created") or upsert.get("changes"))}
    if not ran.get("success"):
        return {**ran, "recipe": saved}
    artifact = None
    if ran.get("artifactId") and ran.get("status") in ("completed", "failed", "cancelled"):
        read = execute("data/read", {"collection": ARTIFACTS, "id": ran["artifactId"]})
        artifact = read.get("data") if read.get("success") else None
    return {**ran, "recipe": saved, "artifact": artifact}


def _invalid(field: str, rule: str) -> dict[str, Any]:
    return failure(InvalidInputError(field, rule))
