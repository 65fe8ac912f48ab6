"""Continuum's shipped forge/run call through a real server: snake_case
`{recipe: <full ForgeRecipe>, hardware_node}`, the recipe upserted (idempotent by id and
content), then run, answered with the run envelope and the ForgeArtifact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_http_commands import R, fake_recipe
from tests.served import Served, serve

pytestmark = pytest.mark.slow  # a real server subprocess per module


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve-continuum")
    with serve(f"sqlite:///{work / 'foundry.db'}", work) as s:
        yield s


def continuum_recipe() -> dict[str, Any]:
    """The recipe as Continuum's TypeScript sends it: its id inside, snake_case field names."""
    data = fake_recipe()
    data["id"] = str(uuid.uuid4())
    data["user_summary"] = data.pop("userSummary")
    data["source"] = {"base_model": "fake://tiny", "architecture": "llama"}
    return data


def test_the_continuum_shape_upserts_the_recipe_runs_it_and_returns_the_artifact(
        served: Served) -> None:
    recipe = continuum_recipe()
    first = served.ok("forge/run", {"recipe": recipe, "hardware_node": "cpu@local"},
                      token="run")
    assert first["status"] == "completed" and first["hardwareNode"] == "cpu@local"
    assert first["recipe"] == {"id": recipe["id"], "created": True, "revision": 1,
                               "changed": True}
    artifact = first["artifact"]
    assert artifact["id"] == first["artifactId"] and artifact["recipeId"] == recipe["id"]
    assert artifact["status"] == "completed" and artifact["alloyHash"].startswith("sha256:")
    stored = served.ok("data/read", {"collection": R, "id": recipe["id"]}, token="read")
    assert stored["data"]["userSummary"] == recipe["user_summary"]
    history = served.ok("data/history", {"collection": R, "id": recipe["id"]}, token="read")
    assert [h["author"] for h in history["items"] if h["event"] == "Created"] == [
        served.names["run"]]

    again = served.ok("forge/run", {"recipe": recipe, "hardware_node": "cpu@local"},
                      token="run")
    assert again["recipe"]["changed"] is False and again["runId"] != first["runId"]
    after = served.ok("data/history", {"collection": R, "id": recipe["id"]}, token="read")
    edits = [h["event"] for h in after["items"] if h["event"] != "VersionPinned"]
    assert edits == ["Created"]  # the same content again: no edit (each run pins, as usual)

    edited = {**recipe, "description": "a new description from Continuum"}
    pinned = served.call("forge/run", {"recipe": edited, "hardware_node": "cpu@local"},
                         token="run")
    assert pinned.status_code == 409 and pinned.json()["errorCode"] == "version_pinned"
    bumped = {**edited, "version": "0.2.0"}
    third = served.ok("forge/run", {"recipe": bumped, "hardware_node": "cpu@local"},
                      token="run")
    assert third["recipe"]["changed"] is True and third["recipe"]["created"] is False
    assert third["recipeVersion"] == "0.2.0" and third["artifact"]["recipeVersion"] == "0.2.0"


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"recipe": {"name": "no id"}, "hardware_node": "cpu@local"}, 400, "recipe.id"),
    ({"recipe": "not an object"}, 400, "recipe.id"),
    ({"recipe": {"id": str(uuid.uuid4())}, "recipeId": str(uuid.uuid4())}, 400, "recipe"),
])
def test_a_broken_continuum_call_names_the_field(served: Served, params: dict[str, Any],
                                                 status: int, field: str) -> None:
    response = served.call("forge/run", params, token="run")
    body = response.json()
    assert response.status_code == status and body["errors"][0]["field"] == field


def test_the_continuum_shape_needs_the_run_scope(served: Served) -> None:
    response = served.call("forge/run", {"recipe": continuum_recipe()}, token="write")
    assert response.status_code == 403
    bad_node = served.call("forge/run", {"recipe": continuum_recipe(),
                                         "hardware_node": "NOT A NODE"}, token="run")
    assert bad_node.status_code == 400 and "hardware_node" in bad_node.json()["error"]
