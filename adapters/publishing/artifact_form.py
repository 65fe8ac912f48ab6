"""Foundry's own artifact file: what `alloy/export` of a run and `forge/publish` write, and
how `alloy/import` takes it back into another store as the same artifact.

The artifact form is the artifact exactly as `build_artifact` gives it (id, recipeId,
recipeVersion, recipeName, the frozen recipe fields, what the run measured, provenance, and
the unhashed alloyHash, receipt and integrity). `alloyHash` is defined over exactly what the
file holds minus those three fields, so the file verifies as it lies on disk.

Imported into a second store, it stays the same artifact: the run keeps the original run id
(so the artifact id, derived from it, is the file's `id`), the recipe is created under the
file's `recipeId` where that id is free, and the artifact the store serves is the file's
fields, untouched. A file whose content no longer hashes to its `alloyHash` is refused: it was
changed after it was sealed, and importing it would make a store vouch for it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.store.recipe_book import renamed
from foundry.domain.artifact_builder import alloy_hash, artifact_id
from foundry.domain.errors import InvalidInputError, RecipeNotFoundError, RunNotFoundError
from foundry.domain.validation import validate_model
from foundry.domain.values.artifact import RECIPE_SNAPSHOT_FIELDS, ForgeArtifact

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices as Foundry

def is_artifact_form(data: dict[str, Any]) -> bool:
    """An artifact names its recipe (recipeId, recipeVersion) where a recipe file names
    itself (name, version): the two forms never overlap."""
    return "recipeId" in data and "recipeVersion" in data and "name" not in data


def recipe_of(data: dict[str, Any]) -> dict[str, Any]:
    """The recipe an artifact froze: its name and version and the authored fields."""
    recipe: dict[str, Any] = {"name": data.get("recipeName"), "version": data["recipeVersion"]}
    for field in RECIPE_SNAPSHOT_FIELDS:
        if field in data:
            recipe[field] = copy.deepcopy(data[field])
    if recipe["name"] is None:
        raise InvalidInputError("recipeName", "required field is missing (an artifact names "
                                "the recipe it was forged from)")
    return recipe


def check_artifact(data: dict[str, Any], file_name: str) -> None:
    """The artifact's own shape, and its hash over exactly what the file holds."""
    validate_model(ForgeArtifact, data)
    recorded = data.get("alloyHash")
    if recorded is not None and recorded != alloy_hash(data):
        raise InvalidInputError(
            "alloyHash", f"{file_name}: the file's alloyHash {recorded} is not the hash of its "
            f"content ({alloy_hash(data)}): the file was changed after it was sealed")


def original_run_id(data: dict[str, Any]) -> UUID | None:
    """The run id the artifact was forged under, where it is the one its `id` derives from."""
    raw = (data.get("provenance") or {}).get("runId")
    try:
        run_id = UUID(str(raw))
    except ValueError:
        return None
    return run_id if artifact_id(str(run_id)) == data.get("id") else None


def free_recipe_id(foundry: Foundry, data: dict[str, Any]) -> tuple[UUID | None, list[str]]:
    """The file's recipeId where no recipe has it here; else None (a new id) and a note."""
    try:
        wanted = UUID(str(data["recipeId"]))
    except ValueError:
        return None, [f"recipeId {data['recipeId']!r} is not a UUID: the recipe gets a new id"]
    try:
        foundry.recipes.get_recipe(wanted)
    except RecipeNotFoundError:
        return wanted, []
    return None, [f"recipeId {wanted} is taken in this store: the recipe gets a new id (the "
                  "artifact keeps the recipeId it was forged from)"]


def existing_run(foundry: Foundry, run_id: UUID | None) -> Any:
    """The run with that id in this store, if any."""
    if run_id is None:
        return None
    try:
        return foundry.runs.get_run(run_id)
    except RunNotFoundError:
        return None


def import_artifact(foundry: Foundry, data: dict[str, Any], path: Path,
                    digest: str) -> dict[str, Any]:
    """Import one artifact-form file (already read and parsed); nothing is written unless
    the whole file validates. Returns the per-file result `alloy_io.import_alloy` gives."""
    from foundry.adapters.clock import utc_now
    from foundry.adapters.store.recipe_data import validate_recipe

    file_name = path.name
    check_artifact(data, file_name)
    recipe = validate_recipe(recipe_of(data))
    run_id = original_run_id(data)
    if run_id is None:
        raise InvalidInputError("provenance.runId", f"{file_name}: an artifact's id must derive "
                                "from its provenance.runId (as every artifact Foundry writes)")
    command_id = f"import-alloy:{digest}"
    present = existing_run(foundry, run_id)
    if present is not None:
        if (present.state.get("imported") or {}).get("fileSha256") == f"sha256:{digest}":
            # The same file again: the same answer, nothing written.
            prior = foundry.recipes.prior_result(command_id)
            return {"file": str(path), "recipeId": (prior or {}).get("id", present.state[
                "recipeId"]), "runId": str(run_id), "migrations": [], "form": "artifact"}
        raise InvalidInputError("provenance.runId", f"{file_name}: run {run_id} is already in "
                                "this store (the artifact was forged or imported here)")
    recipe_id, notes = free_recipe_id(foundry, data)
    created = foundry.recipes.create_recipe(
        recipe, recipe_id=recipe_id, author=str(recipe.get("author", "")),
        command_id=command_id,
        reason=f"imported from the artifact {file_name}" + "".join("; " + n for n in notes),
        free_name=True)
    stored = foundry.recipes.get_recipe(UUID(created["id"]))
    fields = copy.deepcopy(data)
    run, fresh = foundry.runs.request_run(
        run_id, recipe_id=created["id"], recipe_version=stored.recipe_version,
        recipe_revision=stored.revision, recipe_hash=stored.content_hash(), recipe=stored.data,
        hardware_node="imported", publish_target=None, requested_by="import-alloy",
        command_id=command_id, at=utc_now())
    if fresh or run.status == "requested":
        foundry.runs.record(run_id, lambda r: r.record_import(
            fields=fields, source_file=file_name, file_sha256=f"sha256:{digest}", at=utc_now()))
    return {"file": str(path), "recipeId": created["id"], "runId": str(run_id),
            "migrations": notes, "form": "artifact", **renamed(created)}
