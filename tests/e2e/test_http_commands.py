"""`foundry serve` through a real uvicorn on loopback: every data/* and forge/* command, the
HTTP status of each error, the OpenAPI document, health and readiness, on SQLite and
PostgreSQL. The server is a subprocess (`python -m foundry.adapters.cli.main serve`); tokens
are written to the store by this process, as `foundry tokens create` would."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE, ROOT, drop_schema, pg_schema_url
from tests.served import Served, serve

pytestmark = pytest.mark.slow  # a real server subprocess per module

R, A = "forge_recipes", "forge_artifacts"


def fake_recipe(**overrides: Any) -> dict[str, Any]:
    """The example on fake://tiny under a name of its own: names are unique among live
    recipes, and one served store is shared by a module's tests."""
    data = json.loads(EXAMPLE.read_text())
    data["source"]["baseModel"] = "fake://tiny"
    data["name"] = f"{data['name']}-{uuid.uuid4().hex[:8]}"
    return {**copy.deepcopy(data), **overrides}


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve")
    if request.param == "sqlite":
        with serve(f"sqlite:///{work / 'foundry.db'}", work) as s:
            yield s
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with serve(pg_schema_url(schema), work) as s:
            yield s
    finally:
        drop_schema(schema)


def create(served: Served, **overrides: Any) -> dict[str, Any]:
    return served.ok("data/create", {"collection": R, "data": fake_recipe(**overrides)},
                     token="write")


def test_every_data_command_answers_with_the_envelope_execute_gives(served: Served) -> None:
    created = create(served, name="http-data")
    rid = created["id"]
    assert created["data"]["name"] == "http-data" and created["revision"] == 1
    read = served.ok("data/read", {"collection": R, "id": rid}, token="read")
    assert read["found"] is True and read["data"] == created["data"]
    updated = served.ok("data/update", {"collection": R, "id": rid, "expectedRevision": 1,
                                        "data": {"description": "edited over HTTP"}},
                        token="write")
    assert updated["newRevision"] == 2
    assert updated["changes"] == [{"field": "description", "old": fake_recipe()["description"],
                                   "new": "edited over HTTP"}]
    upserted = served.ok("data/upsert", {"collection": R, "id": rid,
                                         "data": {**updated["data"], "tags": ["http"]}},
                         token="write")
    assert upserted["created"] is False and upserted["newRevision"] == 3
    listed = served.ok("data/list", {"collection": R, "filter": {"name": "http-data"}},
                       token="read")
    assert [i["id"] for i in listed["items"]] == [rid]
    queried = served.ok("data/query", {"collection": R, "filter": {"tags": {"$contains": "http"}},
                                       "orderBy": [{"field": "updatedAt", "direction": "desc"}]},
                        token="read")
    assert rid in [i["id"] for i in queried["items"]]
    counted = served.ok("data/count", {"collection": R, "filter": {"name": "http-data"}},
                        token="read")
    assert counted["count"] == 1
    history = served.ok("data/history", {"collection": R, "id": rid}, token="read")
    assert [h["event"] for h in history["items"]] == ["Created", "Edited", "Edited"]
    fork = served.ok("recipe/fork", {"id": rid, "data": {"name": "http-fork"}}, token="write")
    assert fork["data"]["parentRecipeId"] == rid
    deleted = served.ok("data/delete", {"collection": R, "id": rid, "expectedRevision": 3},
                        token="write")
    assert deleted["found"] is True
    assert served.ok("data/count", {"collection": R, "filter": {"name": "http-data"}},
                     token="read")["count"] == 0


def test_every_forge_command_answers_over_http(served: Served, tmp_path: Path) -> None:
    rid = create(served, name="http-forge")["id"]
    run = served.ok("forge/run", {"recipeId": rid, "hardwareNode": "cpu@local"}, token="run")
    assert run["status"] == "completed", run
    run_id = run["runId"]
    status = served.ok("forge/status", {"runId": run_id}, token="read")
    assert status["status"] == "completed" and status["artifactId"] == run["artifactId"]
    assert [s["status"] for s in status["stages"]] == ["completed"] * len(status["stages"])
    runs = served.ok("forge/list-runs", {"filter": {"recipeId": rid}}, token="read")
    assert [r["runId"] for r in runs["runs"]] == [run_id]
    cancel = served.call("forge/cancel", {"runId": run_id, "reason": "late"}, token="run")
    assert cancel.status_code == 409 and cancel.json()["errorCode"] == "run_ended"
    resume = served.call("forge/resume", {"runId": run_id}, token="run")
    assert resume.status_code == 409, resume.json()
    published = served.ok("forge/publish", {"id": run["artifactId"],
                                            "target": f"file://{tmp_path / 'pub'}"}, token="run")
    assert (tmp_path / "pub").is_dir() and published["success"]
    lineage = served.ok("lineage/report", {"id": run["artifactId"]}, token="read")
    assert lineage["success"]
    replay = served.ok("audit/replay", {"runId": run_id}, token="read")
    assert replay["ok"] is True, replay
    exported = served.ok("alloy/export", {"id": run["artifactId"]}, token="read")
    assert exported["alloy"]


@pytest.mark.parametrize(("command", "params", "token", "status", "code"), [
    ("data/create", {"data": {}}, "write", 400, "invalid_input"),
    ("data/list", {"collection": R, "filter": {"$nope": 1}}, "read", 400, "invalid_input"),
    ("data/create", {"collection": R, "data": {}}, None, 401, "unauthenticated"),
    ("data/create", {"collection": R, "data": {}}, "fdy_" + "0" * 32 + "_" + "x" * 43, 401,
     "unauthenticated"),
    ("data/update", {"collection": R, "id": str(uuid.uuid4()), "data": {}}, "read", 403,
     "forbidden"),
    ("forge/run", {"recipeId": str(uuid.uuid4())}, "write", 403, "forbidden"),
    ("artifact/card", {"id": str(uuid.uuid4()), "out": "/tmp/x"}, "run", 403, "forbidden"),
    ("no/such-command", {}, "read", 404, "not_found"),
    ("forge/status", {"runId": str(uuid.uuid4())}, "read", 404, "not_found"),
    ("data/update", {"collection": R, "id": str(uuid.uuid4()), "data": {}}, "write", 404,
     "not_found"),
])
def test_each_error_code_has_its_http_status(served: Served, command: str, params: Any,
                                             token: str | None, status: int, code: str) -> None:
    response = served.call(command, params, token=token)
    body = response.json()
    assert (response.status_code, body["success"], body["errorCode"]) == (status, False, code)
    assert body["error"] and body["timestamp"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_stale_expected_revision_is_409(served: Served) -> None:
    rid = create(served)["id"]
    served.ok("data/update", {"collection": R, "id": rid, "data": {"description": "one"}},
              token="write")
    stale = served.call("data/update", {"collection": R, "id": rid, "expectedRevision": 1,
                                        "data": {"description": "two"}}, token="write")
    assert stale.status_code == 409 and stale.json()["errorCode"] == "revision_conflict"


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b"{\"a\": NaN}",
                                  b"[" * 100_000])
def test_a_broken_body_is_a_400_envelope_never_a_traceback(served: Served, body: bytes) -> None:
    response = served.call("data/list", content=body, token="read")
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "invalid_input"


def test_every_error_code_in_the_code_maps_to_a_status() -> None:
    from foundry.adapters.http.errors import STATUS_BY_CODE

    codes = {m for folder in ("domain", "adapters", "executors", "projections")
             for path in (ROOT / folder).rglob("*.py")
             for m in re.findall(r'^\s+code = "(\w+)"', path.read_text(), re.MULTILINE)}
    assert "invalid_input" in codes and "store_unavailable" in codes  # the scan finds them
    assert codes - set(STATUS_BY_CODE) == set()


def test_openapi_has_every_registry_command_with_its_params_schema(served: Served) -> None:
    from foundry.adapters.bootstrap import build_commands

    doc = served.client.get(f"{served.url}/v1/openapi.json").json()
    names = build_commands().names()
    assert {f"/v1/commands/{n}" for n in names} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    for name in names:
        ref = doc["paths"][f"/v1/commands/{name}"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["$ref"]
        assert ref.removeprefix("#/components/schemas/") in schemas, name
    update = schemas["UpdateEntity"]
    assert "expectedRevision" in update["properties"]
    assert set(update["required"]) == {"collection", "id", "data"}


def test_health_and_readiness_answer_without_a_token(served: Served) -> None:
    health = served.client.get(f"{served.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = served.client.get(f"{served.url}/readyz").json()
    assert ready["status"] == "ready" and set(ready["lags"]) == {R, A}


def test_an_unknown_route_is_an_envelope(served: Served) -> None:
    response = served.client.get(f"{served.url}/v1/nothing-here")
    assert response.status_code == 404 and response.json()["errorCode"] == "not_found"
