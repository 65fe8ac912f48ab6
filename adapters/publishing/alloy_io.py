"""`.alloy.json` in and out: import a file as a recipe (and its results as an imported run),
export a recipe or artifact in the forge-alloy format.

Import keeps every field: what ForgeRecipe does not know stays as an extra; what only a run
can know (`results`, `receipt`, `integrity`, `alloyHash`, `hardwareVerified`, ...) becomes an
imported run whose artifact carries those fields exactly. Legacy quirks are upgraded, each
with a migration note printed by the command and kept in the recipe's history (the reason of
its Created event); the original shape is remembered so that export gives it back.

Explicit nulls (`"hardware": null`) import as absent. So that an export writes back exactly
what was imported, the recipe keeps an `IMPORT_RECORD`: where the file had nulls and which
fields (defaults, migrations) validation added; export removes the added fields whose value is
unchanged and puts the nulls back where the field is still absent.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from foundry.adapters.clock import utc_now
from foundry.adapters.publishing.artifact_form import import_artifact, is_artifact_form
from foundry.adapters.publishing.safe_files import read_regular_file
from foundry.adapters.store.recipe_book import renamed
from foundry.domain.errors import InvalidInputError
from foundry.domain.storable import check_size, check_storable
from foundry.domain.validation import validate_model
from foundry.domain.values.artifact import ForgeArtifact

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices as Foundry

# Top-level fields that only a run can know: they go to the imported run, not the recipe.
ARTIFACT_FIELDS = ("results", "receipt", "integrity", "alloyHash", "hardwareVerified",
                   "forgedAt", "durationMinutes", "forgedParamsB", "activeParamsB")
LEGACY_MARK = "legacyType"
# The hardwareNode of a run that happened elsewhere: no dispatcher ever executes it.
IMPORTED_NODE = "imported"
# The recipe field that remembers the file's own shape (see the module docstring).
IMPORT_RECORD = "foundryImport"
# A real .alloy.json is tens of KB: a regular file of at most this, never /dev/zero or a FIFO.
MAX_ALLOY_BYTES = 8 * 1024 * 1024


def read_alloy(path: Path, raw: bytes | None = None) -> dict[str, Any]:
    if raw is None:
        raw = read_regular_file(path, max_bytes=MAX_ALLOY_BYTES, field="file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidInputError("file", f"{path.name}: not UTF-8 ({e.reason})") from None
    except RecursionError:
        raise InvalidInputError("file", f"{path.name}: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise InvalidInputError("file", f"{path.name}: malformed JSON at line {e.lineno} "
                                f"column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("file", f"{path.name}: must be a JSON object")
    return data


def migrate(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Upgrade legacy shapes; returns the upgraded copy and one note per change."""
    out, notes = copy.deepcopy(data), []
    for i, stage in enumerate(out.get("stages") or []):
        if isinstance(stage, dict) and stage.get("type") == "deliver":
            stage.update(type="publish", **{LEGACY_MARK: "deliver"})
            notes.append(f"stages.{i}: legacy 'deliver' stage imported as a 'publish' stage "
                         "(no org: the publish target decides)")
    corpora = out.get("calibrationCorpora")
    if "calibrationCorpus" not in out and isinstance(corpora, list) and len(corpora) == 1:
        c = corpora[0]
        sha = str(c.get("sha256") or "")
        if sha:
            out["calibrationCorpus"] = {
                "name": c.get("name") or c.get("id"),
                "contentHash": sha if sha.startswith("sha256:") else f"sha256:{sha}",
                "sizeBytes": int(c.get("sizeBytes") or 0), "sourceUrl": c.get("path"),
            }
            notes.append("calibrationCorpora[0] also written as calibrationCorpus "
                         "(the list is kept as it was)")
    receipt = out.get("receipt")
    if isinstance(receipt, dict) and not receipt:
        out.pop("receipt")
        notes.append("receipt: empty and without issuedAt: dropped (nothing was published)")
    return out, notes


def split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(recipe fields, artifact fields)."""
    recipe = {k: v for k, v in data.items() if k not in ARTIFACT_FIELDS}
    artifact = {k: v for k, v in data.items() if k in ARTIFACT_FIELDS}
    return recipe, artifact


def import_alloy(foundry: Foundry, path: Path) -> dict[str, Any]:
    """Import one file: nothing is written unless the whole file validates."""
    from foundry.adapters.store.recipe_data import validate_recipe

    raw = read_regular_file(path, max_bytes=MAX_ALLOY_BYTES, field="file")
    data = read_alloy(path, raw)
    # The same rules as data/* (#17 item 8): a NUL or NaN imported once broke every later
    # read of a PostgreSQL store, so nothing of a file is written unless all of it is storable.
    check_storable(data, "file")
    check_size(data, "file")
    if is_artifact_form(data):  # Foundry's own artifact file (artifact_form.py)
        return import_artifact(foundry, data, path, hashlib.sha256(raw).hexdigest())
    upgraded, notes = migrate(data)
    recipe_data, artifact_fields = split(upgraded)
    recipe = validate_recipe(recipe_data)
    recipe[IMPORT_RECORD] = import_record(path.name, split(data)[0], recipe_data, recipe)
    _validate_run_fields(artifact_fields, recipe)
    digest = hashlib.sha256(raw).hexdigest()
    reason = "imported from " + path.name + ("; " + "; ".join(notes) if notes else "")
    created = foundry.recipes.create_recipe(
        recipe, recipe_id=None, author=str(recipe.get("author", "")),
        command_id=f"import-alloy:{digest}", reason=reason, free_name=True)
    result: dict[str, Any] = {"file": str(path), "recipeId": created["id"],
                              "migrations": notes, "runId": None, **renamed(created)}
    if artifact_fields:
        result["runId"] = _import_run(foundry, UUID(created["id"]), artifact_fields, path,
                                      digest)
    return result


def _validate_run_fields(fields: dict[str, Any], recipe: dict[str, Any]) -> None:
    """The run-side fields must have the artifact's shapes too (results a mapping of numbers,
    receipt and integrity hashes `sha256:<hex>` ...): an import never stores what a run could
    not have produced. The recipe half was validated already; its identity fills the
    artifact's required fields."""
    if not fields:
        return
    identity = {"id": "imported", "recipeId": "imported", "recipeVersion": recipe["version"]}
    validate_model(ForgeArtifact, {**fields, **identity})


def _import_run(foundry: Foundry, recipe_id: UUID, fields: dict[str, Any], path: Path,
                digest: str) -> str:
    recipe = foundry.recipes.get_recipe(recipe_id)
    run_id = uuid5(NAMESPACE_URL, f"foundry/imported-run/{digest}")
    run, created = foundry.runs.request_run(
        run_id, recipe_id=str(recipe_id), recipe_version=recipe.recipe_version,
        recipe_revision=recipe.revision, recipe_hash=recipe.content_hash(), recipe=recipe.data,
        hardware_node=IMPORTED_NODE, publish_target=None, requested_by="import-alloy",
        command_id=f"import-alloy:{digest}", at=utc_now())
    if created or run.status == "requested":
        foundry.runs.record(run_id, lambda r: r.record_import(
            fields=fields, source_file=path.name, file_sha256=f"sha256:{digest}",
            at=utc_now()))
    return str(run_id)


def export_alloy(foundry: Foundry, some_id: UUID) -> dict[str, Any]:
    """The forge-alloy form of a recipe (authored fields), or an artifact: the artifact form
    (artifact_form.py) for a run forged here or imported from such a file, the file's own
    shape for a legacy alloy imported."""
    if some_id in foundry.recipes.repository:
        return _unmigrate(restore_shape(_recipe_part(foundry.recipes.get_recipe(some_id).data)))
    from foundry.adapters.store.run_lookup import run_of
    from foundry.domain.artifact_builder import build_artifact

    run = foundry.runs.get_run(run_of(foundry, some_id))
    imported = run.state.get("imported")
    if not imported or is_artifact_form(imported["fields"]):
        # The artifact itself: every field its alloyHash covers, so the file verifies as it
        # is; an imported artifact file is given back exactly as it came.
        return dict(build_artifact(run.state))
    # A legacy alloy forged elsewhere: the file's own shape back (recipe half + run half).
    out = restore_shape(_recipe_part(run.state["recipe"]))
    out.update(copy.deepcopy(imported["fields"]))
    return _unmigrate(out)


def _recipe_part(data: dict[str, Any]) -> dict[str, Any]:
    """The authored fields; the entity id belongs to this store, not to the file."""
    return {k: copy.deepcopy(v) for k, v in data.items() if k != "id"}


def _unmigrate(data: dict[str, Any]) -> dict[str, Any]:
    """Give migrated stages their original shape back."""
    for stage in data.get("stages") or []:
        if stage.get(LEGACY_MARK) == "deliver":
            legacy = {k: v for k, v in stage.items()
                      if k not in ("type", LEGACY_MARK, "repoNameTemplate", "includeAlloy",
                                   "cardFromBenchmarks", "tags", "private")}
            stage.clear()
            stage.update({"type": "deliver", **legacy})
    return data


# --- the file's own shape: explicit nulls and added fields -------------------------------------

def import_record(file_name: str, original: dict[str, Any], upgraded: dict[str, Any],
                  wire: dict[str, Any]) -> dict[str, Any]:
    """What `restore_shape` needs to give the file back: JSON Pointers (RFC 6901) of its nulls,
    and [pointer, value] of every field in the stored form that the file did not have (the
    defaults validation filled in, the fields a migration added)."""
    added = [[pointer(path), value] for path, value in _added(wire, upgraded, ())]
    added += [[pointer((key,)), wire[key]] for key in upgraded
              if key not in original and key in wire and [pointer((key,)), wire[key]] not in added]
    return {"file": file_name, "nulls": [pointer(p) for p in _nulls(original, ())],
            "added": added}


def restore_shape(data: dict[str, Any]) -> dict[str, Any]:
    """Undo what the import changed (see `import_record`), where the data still holds it: an
    added field edited since stays, a null whose field has been set since stays set."""
    record = data.pop(IMPORT_RECORD, None)
    if not isinstance(record, dict):
        return data
    for entry in record.get("added") or []:
        parent, key = _locate(data, str(entry[0]))
        if parent is not None and _member(parent, key) and parent[key] == entry[1]:
            del parent[key]
    for where in record.get("nulls") or []:
        parent, key = _locate(data, str(where))
        if isinstance(parent, dict) and key not in parent:
            parent[key] = None
    return data


def _nulls(value: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in ([(*path, k)] if v is None else _nulls(v, (*path, k)))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, (*path, i))]
    return []


def _added(wire: Any, given: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, value) of each object member in `wire` that `given` lacks (or has as null)."""
    if isinstance(wire, dict) and isinstance(given, dict):
        return [found for k, v in wire.items()
                for found in ([((*path, k), v)] if given.get(k) is None
                              else _added(v, given[k], (*path, k)))]
    if isinstance(wire, list) and isinstance(given, list) and len(wire) == len(given):
        return [found for i, (w, g) in enumerate(zip(wire, given, strict=True))
                for found in _added(w, g, (*path, i))]
    return []


def pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _locate(doc: Any, where: str) -> tuple[Any, Any]:
    """(the container holding the pointer's last token, that token); (None, None) when the
    path no longer exists."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in where.split("/")[1:]]
    if not tokens:
        return None, None
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token)
        if node is None:
            return None, None
    last: Any = tokens[-1]
    if isinstance(node, list):
        last = int(last) if last.isdigit() else None
        return (node, last) if last is not None else (None, None)
    return (node, last) if isinstance(node, dict) else (None, None)


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        return node.get(token)
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    return None


def _member(parent: Any, key: Any) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)
