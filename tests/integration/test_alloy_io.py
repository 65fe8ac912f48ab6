"""`.alloy.json` import and export (adapters/alloy_io.py) on SQLite and PostgreSQL: every fixture
in tests/fixtures/alloys and every file of the external conformance corpus (tests/alloy_corpus.py
says where it is looked for), a round trip of an artifact forged here, and files that cannot be
imported.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import structlog

from foundry.adapters.publishing.alloy_io import export_alloy, import_alloy
from foundry.adapters.store.recipe_data import validate_recipe
from foundry.domain.artifact_builder import artifact_id
from foundry.domain.errors import InvalidInputError
from foundry.projections.recipes.fold import META_FIELDS
from tests.alloy_corpus import (
    EXECUTED_FIXTURE,
    FIXTURE_FILES,
    NULLS_FIXTURE,
    alloy_or_skip,
    alloy_params,
    corpus_files,
    require_corpus,
)
from tests.conftest import ROOT, count_events, count_run_events, leaves, ok, read

A = "forge_artifacts"
R = "forge_recipes"
EXECUTED = EXECUTED_FIXTURE


# --- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture
def foundry(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    monkeypatch.setenv("FOUNDRY_EXECUTORS", "fake")
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_FAKE_MODELS", str(tmp_path / "fake-models"))
    for name in ("FOUNDRY_FAKE_SLEEP", "FOUNDRY_FAKE_FAIL_ON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    structlog.configure(processors=[
        structlog.processors.add_log_level,
        structlog.processors.KeyValueRenderer(key_order=["event"]),
    ])
    with Foundry.open(store_url) as f:
        yield f


def counts(foundry: Any) -> tuple[int, int]:
    return count_events(foundry), count_run_events(foundry)



def has_deliver(data: dict[str, Any]) -> list[int]:
    return [i for i, s in enumerate(data.get("stages") or []) if s.get("type") == "deliver"]


# --- the fixtures and the conformance corpus -------------------------------------------------

def test_the_fixtures_cover_every_shape_of_the_real_alloys():
    files = {p.name: json.loads(p.read_text()) for p in FIXTURE_FILES}
    assert any(has_deliver(d) for d in files.values())
    assert any("calibrationCorpora" in d for d in files.values())
    assert any(any("id" in b and "value" not in b for b in d.get("priorMetricBaselines", []))
               for d in files.values())
    assert any(d.get("hardware", 0) is None for d in files.values())
    assert any({"hardwareVerified", "samples"} <= set(d.get("results", {}))
               for d in files.values())
    known = set(validate_recipe(json.loads(NULLS_FIXTURE.read_text())))
    assert any(set(d) - known - {"results", "forgedModelIds"} for d in files.values())


def test_the_conformance_corpus_is_there_or_the_skip_says_where_it_looked():
    files = require_corpus()
    executed = [p for p in files if "results" in json.loads(p.read_text())]
    assert executed, files
    assert any(has_deliver(json.loads(p.read_text())) for p in files)


@pytest.mark.parametrize("path", alloy_params())
def test_an_alloy_imports_and_exports_without_losing_a_field(foundry, path):
    path = alloy_or_skip(path)
    original = json.loads(path.read_text(encoding="utf-8"))
    result = import_alloy(foundry, path)

    # The recipe: its authored fields validate as they are stored.
    recipe = read(foundry, R, result["recipeId"])
    authored = {k: v for k, v in recipe.items() if k not in META_FIELDS}
    assert validate_recipe(recipe) == authored
    assert (recipe["name"], recipe["version"]) == (original["name"], original["version"])
    assert recipe["stages"][0]["type"] == original["stages"][0]["type"]

    # Legacy `deliver` stages: upgraded, each with a note in the result and in the history.
    delivers = has_deliver(original)
    assert len(result["migrations"]) == len(delivers) + (
        "calibrationCorpora" in original) + (original.get("receipt") == {})
    for i in delivers:
        assert recipe["stages"][i]["type"] == "publish"
        assert any(n.startswith(f"stages.{i}: legacy 'deliver'") for n in result["migrations"])
    history = ok(foundry.execute("data/history", {"collection": R, "id": result["recipeId"]}))
    created = history["items"][0]
    assert created["event"] == "Created"
    assert path.name in created["reason"]
    for note in result["migrations"]:
        assert note in created["reason"]

    # An executed alloy becomes an imported, completed run carrying its results exactly.
    if "results" in original:
        assert result["runId"] is not None
        artifact = read(foundry, A, artifact_id(result["runId"]))
        assert artifact["results"] == original["results"]
        assert artifact["provenance"]["imported"] is True
        assert artifact["provenance"]["sourceFile"] == path.name
        assert artifact["status"] == "completed"
        assert artifact["recipeId"] == result["recipeId"]
        status = ok(foundry.execute("forge/status", {"runId": result["runId"]}))
        assert status["status"] == "completed" and status["hardwareNode"] == "imported"
    else:
        assert result["runId"] is None

    # Export gives the file back, key by key: the legacy stage in its legacy shape, explicit
    # nulls as nulls, no field the file did not have.
    exported = export_alloy(foundry, UUID(result["runId"] or result["recipeId"]))
    assert sorted(leaves(exported)) == sorted(leaves(original))
    assert exported == original
    for i in delivers:
        assert exported["stages"][i]["type"] == "deliver"

    # The same file again creates nothing new.
    before = counts(foundry)
    again = import_alloy(foundry, path)
    assert (again["recipeId"], again["runId"]) == (result["recipeId"], result["runId"])
    assert counts(foundry) == before
    listed = ok(foundry.execute("data/list", {"collection": R}))
    assert [i["id"] for i in listed["items"]] == [result["recipeId"]]


def test_a_null_for_an_optional_field_imports_as_absent_and_exports_as_null(foundry):
    original = json.loads(NULLS_FIXTURE.read_text())
    assert original["hardware"] is None and original["source"]["revision"] is None
    result = import_alloy(foundry, NULLS_FIXTURE)
    recipe = read(foundry, R, result["recipeId"])
    # Absent: the default (hardware) or nothing at all (revision, the stage's dataset).
    assert recipe["hardware"] == validate_recipe({**original, "hardware": None})["hardware"]
    assert isinstance(recipe["hardware"], dict)
    assert "revision" not in recipe["source"] and "dataset" not in recipe["stages"][0]
    assert recipe["description"] == ""
    # An edit of a field the file had as null is kept by the export; the other nulls are not.
    ok(foundry.execute("data/update", {"collection": R, "id": result["recipeId"],
                                       "data": {"description": "now set"}}))
    exported = export_alloy(foundry, UUID(result["recipeId"]))
    assert exported == {**original, "description": "now set"}


def test_every_alloy_imports_into_one_store_once(foundry):
    paths = FIXTURE_FILES + corpus_files()  # the corpus too, where there is one
    results = [import_alloy(foundry, p) for p in paths]
    before = counts(foundry)
    assert [import_alloy(foundry, p) for p in paths] == results
    assert counts(foundry) == before
    recipes = ok(foundry.execute("data/list", {"collection": R, "limit": 100}))
    assert recipes["count"] == len(paths)
    artifacts = ok(foundry.execute("data/list", {"collection": A, "limit": 100}))
    assert artifacts["count"] == sum("results" in json.loads(p.read_text()) for p in paths)


# --- an artifact forged here -----------------------------------------------------------------

def test_an_artifact_forged_here_exports_as_itself_and_is_not_imported_twice(
        foundry, recipe_data, tmp_path):
    """The export is the artifact (every hashed field: id, recipe identity, provenance), so
    it verifies; importing it into the store it was forged in is refused by name (the other
    store's round trip is tests/integration/test_artifact_roundtrip.py)."""
    from foundry.domain.artifact_builder import alloy_hash

    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert run["status"] == "completed"

    first = export_alloy(foundry, UUID(run["artifactId"]))
    assert first["alloyHash"] == run["alloyHash"] == alloy_hash(first)
    assert {"id", "recipeId", "recipeName", "provenance", "hardwareNode"} <= set(first)
    stored = read(foundry, A, run["artifactId"])
    assert first == {k: v for k, v in stored.items() if k != "status"}
    assert export_alloy(foundry, UUID(run["runId"])) == first
    file = tmp_path / "forged.alloy.json"
    file.write_text(json.dumps(first, indent=2), encoding="utf-8")
    before = counts(foundry)
    with pytest.raises(InvalidInputError, match="already in this store"):
        import_alloy(foundry, file)
    assert counts(foundry) == before

    # Once published, the export carries the receipt; the hash still holds.
    ok(foundry.execute("forge/publish", {"id": run["runId"],
                                         "target": f"file://{tmp_path / 'out'}"}))
    published = export_alloy(foundry, UUID(run["runId"]))
    assert published["receipt"]["alloyHash"] == run["alloyHash"] == alloy_hash(published)
    assert {k: v for k, v in published.items() if k != "receipt"} == first


# --- files that cannot be imported -----------------------------------------------------------

def _malformed(_data: dict[str, Any]) -> str:
    return '{"name": "broken",\n  "stages": [}\n'


def _bad_level(data: dict[str, Any]) -> str:
    data["stages"][0]["level"] = 1.5
    return json.dumps(data)


def _unknown_stage(data: dict[str, Any]) -> str:
    data["stages"][2]["type"] = "transmogrify"
    return json.dumps(data)


def _not_an_object(_data: dict[str, Any]) -> str:
    return json.dumps([1, 2])


def _results_not_an_object(data: dict[str, Any]) -> str:
    data["results"] = "oops"
    return json.dumps(data)


def _bad_alloy_hash(data: dict[str, Any]) -> str:
    data["alloyHash"] = "md5:1234"
    return json.dumps(data)


BAD_FILES = {
    "malformed JSON": (_malformed, "file", ["malformed JSON", "line 2"]),
    "prune level above 0.9": (_bad_level, "stages.0", ["level", "0.9"]),
    "unknown stage type": (_unknown_stage, "stages.2", ["transmogrify", "prune"]),
    "not an object": (_not_an_object, "file", ["JSON object"]),
    "results not an object": (_results_not_an_object, "results", ["valid dictionary"]),
    "alloyHash not sha256": (_bad_alloy_hash, "alloyHash", ["sha256"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_file_that_cannot_be_imported_says_why_and_imports_nothing(foundry, tmp_path, case):
    make, field, words = BAD_FILES[case]
    path = tmp_path / "bad.alloy.json"
    path.write_text(make(json.loads(EXECUTED.read_text())), encoding="utf-8")
    before = counts(foundry)
    with pytest.raises(InvalidInputError) as raised:
        import_alloy(foundry, path)
    error = raised.value
    assert field in error.field, (error.field, str(error))
    for word in words:
        assert word in str(error), (word, str(error))
    assert counts(foundry) == before == (0, 0)
    assert ok(foundry.execute("data/list", {"collection": R}))["count"] == 0
    assert ok(foundry.execute("data/list", {"collection": A}))["count"] == 0

    # A good file imports afterwards as if nothing had happened.
    assert import_alloy(foundry, EXECUTED)["runId"] is not None
