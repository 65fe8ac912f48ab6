"""The command contract on SQLite and PostgreSQL: error codes that say what failed, inputs the
stores cannot hold refused by field, the design's call shapes (upsert with `entity`, a
publishTarget template), and commandIds bound to their params."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from tests.conftest import PG_SERVER, count_events, ok

R = "forge_recipes"
A = "forge_artifacts"


def refused(result: dict[str, Any], code: str, field: str) -> dict[str, Any]:
    assert result["success"] is False, result
    assert result["errorCode"] == code, result
    assert result["error"].startswith(f"{field}:") or any(
        e["field"] == field for e in result.get("errors", [])), result
    return result


def create(foundry: Any, data: dict[str, Any]) -> str:
    return str(ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"])


# --- error codes: invalid_input names the field --------------------------------------------

@pytest.mark.parametrize("params", [
    {"collection": R, "limit": True},
    {"collection": R, "limit": False},
    {"collection": R, "limit": 1.0},
])
def test_a_boolean_or_fraction_is_not_a_limit(foundry, params):
    refused(foundry.execute("data/list", params), "invalid_input", "limit")


def test_a_boolean_is_not_an_expected_revision(foundry, recipe_data):
    recipe_id = create(foundry, recipe_data)
    result = foundry.execute("data/update", {"collection": R, "id": recipe_id,
                                             "data": {"description": "x"},
                                             "expectedRevision": True})
    refused(result, "invalid_input", "expectedRevision")


@pytest.mark.parametrize(("params", "field"), [
    ({"collection": R, "filter": {"revision": 2**63}}, "filter.revision"),
    ({"collection": R, "filter": {"revision": {"$gt": -(2**63) - 1}}}, "filter.revision.$gt"),
    ({"collection": R, "filter": {"revision": {"$in": [1, 10**30]}}}, "filter.revision.$in.1"),
])
def test_an_integer_beyond_64_bits_is_invalid_input_naming_where_it_is(foundry, params, field):
    refused(foundry.execute("data/list", params), "invalid_input", field)


def test_an_integer_beyond_64_bits_in_recipe_data_writes_nothing(foundry, recipe_data):
    before = count_events(foundry)
    data = {**recipe_data, "cycles": 2**64}
    refused(foundry.execute("data/create", {"collection": R, "data": data}), "invalid_input",
            "data.cycles")
    assert count_events(foundry) == before


def test_params_nested_deeper_than_the_limit_are_refused_without_recursion(foundry):
    deep: Any = 1
    for _ in range(5000):  # far deeper than Python's recursion limit
        deep = {"$and": [deep]} if isinstance(deep, dict) else {"x": deep}
    result = foundry.execute("data/list", {"collection": R, "filter": deep})
    assert result["errorCode"] == "invalid_input" and "nested deeper" in result["error"], result


def test_a_filter_needing_more_values_than_a_store_binds_is_invalid_input(foundry):
    # 100 clauses of 500 values (the most one $in takes): 50,000 bound values, beyond what
    # SQLite (32,766) or PostgreSQL (65,535 per statement, two statements) accept.
    clauses = [{"name": {"$in": [f"v{i}-{j}" for j in range(500)]}} for i in range(100)]
    result = foundry.execute("data/list", {"collection": R, "filter": {"$or": clauses}})
    refused(result, "invalid_input", "filter")


# --- error codes: internal_error carries a log reference ------------------------------------

def test_an_unexpected_exception_is_internal_error_with_a_reference_to_its_log_entry(foundry):
    from foundry.adapters.commands.registry import CommandSpec
    from foundry.domain import commands as c

    def crash(_cmd: Any, _services: Any, _call: Any) -> dict[str, Any]:
        return {"value": {}["missing"]}  # a KeyError: a bug, as far as the caller can tell

    foundry.services.commands.register(CommandSpec("test/crash", c.RunRef, crash))
    with capture_logs() as logs:
        result = foundry.execute("test/crash", {"runId": "x"})
    assert result["success"] is False and result["errorCode"] == "internal_error", result
    crashed = [e for e in logs if e["event"] == "command_crashed"]
    assert len(crashed) == 1 and crashed[0]["command"] == "test/crash"
    ref = crashed[0]["ref"]
    assert f"ref={ref}" in result["error"] and "KeyError" in result["error"]
    assert isinstance(crashed[0]["exc_info"], KeyError)  # the traceback goes to the log
    assert "missing" not in result["error"]  # ... and not to the caller


def test_an_unknown_store_failure_is_not_called_store_unavailable(foundry):
    """A statement the store rejects for a reason other than reachability is a bug."""
    with foundry.recipe_view.datastore.transaction(commit=True) as cursor:
        cursor.execute("DROP TABLE " + foundry.recipe_view.table)
    with capture_logs() as logs:
        result = foundry.execute("data/list", {"collection": R})
    assert result["errorCode"] == "internal_error", result
    assert any(e["event"] == "command_crashed" for e in logs)


# --- error codes: store_unavailable is reachability only ------------------------------------

# Slow: the library retries a connection its pool cannot get (10 s each) for about 80 s
# before the error reaches the bus.
@pytest.mark.postgres
@pytest.mark.slow
def test_a_store_that_refuses_new_connections_is_store_unavailable():
    from foundry.adapters.bootstrap import Foundry
    from tests.conftest import drop_schema

    suffix = uuid.uuid4().hex[:12]
    role, schema = f"foundry_r_{suffix}", f"t_{suffix}"
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
        admin.execute(f'GRANT CREATE ON DATABASE postgres TO "{role}"')
    url = PG_SERVER.replace("postgresql://postgres@", f"postgresql://{role}@")
    try:
        with Foundry.open(f"{url}?schema={schema}") as foundry:
            ok(foundry.execute("data/list", {"collection": R}))
            # The server stops taking this store's connections (as when it goes down or
            # its login is revoked) and ends the ones it has.
            with psycopg.connect(PG_SERVER, autocommit=True) as admin:
                admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE usename = %s", (role,))
            result = foundry.execute("data/list", {"collection": R})
        assert result["success"] is False and result["errorCode"] == "store_unavailable", result
    finally:
        drop_schema(schema)
        with psycopg.connect(PG_SERVER, autocommit=True) as admin:
            admin.execute(f'REVOKE CREATE ON DATABASE postgres FROM "{role}"')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_is_unavailable_tells_a_refused_connection_from_a_bad_statement(tmp_path):
    import sqlite3

    from eventsourcing.persistence import OperationalError, ProgrammingError

    from foundry.adapters.commands.bus import is_unavailable

    def raised(action: Any) -> Exception:
        try:
            action()
        except Exception as e:
            return e
        pytest.fail("no exception")

    refused_conn = raised(lambda: psycopg.connect("postgresql://postgres@127.0.0.1:1/x",
                                                  connect_timeout=2))
    bad_sql = raised(lambda: sqlite3.connect(":memory:").execute("SELECT nosuch()"))
    locked_dir = tmp_path / "dir.db"
    locked_dir.mkdir()
    unopenable = raised(lambda: sqlite3.connect(str(locked_dir)).execute("SELECT 1"))

    def wrapped(error: Exception, kind: type[Exception]) -> Exception:
        try:
            raise kind(str(error)) from error
        except kind as e:
            return e

    assert is_unavailable(wrapped(refused_conn, OperationalError))
    assert is_unavailable(wrapped(unopenable, OperationalError))
    assert not is_unavailable(wrapped(bad_sql, OperationalError))
    assert not is_unavailable(wrapped(bad_sql, ProgrammingError))


# --- the design's call shapes ---------------------------------------------------------------

def test_upsert_takes_the_whole_entity_with_its_id_inside(foundry, recipe_data):
    recipe_id = str(uuid.uuid4())
    entity = {**recipe_data, "id": recipe_id}
    first = ok(foundry.execute("data/upsert", {"collection": R, "entity": entity}))
    assert first["created"] is True and first["data"]["id"] == recipe_id
    changed = {**entity, "version": "0.2.0", "description": "changed"}
    second = ok(foundry.execute("data/upsert", {"collection": R, "entity": changed}))
    assert second["created"] is False and second["newRevision"] == 2
    assert second["data"]["description"] == "changed"
    # The id + data form is unchanged.
    third = ok(foundry.execute("data/upsert", {"collection": R, "id": recipe_id,
                                               "data": {**changed, "version": "0.3.0"}}))
    assert third["data"]["version"] == "0.3.0"


@pytest.mark.parametrize(("params", "field"), [
    ({"entity": {"name": "no id"}}, "entity"),
    ({"entity": {"id": 7}}, "entity"),
    ({"entity": "a recipe"}, "entity"),
    ({"id": "x"}, "params"),
    ({"entity": {"id": "x"}, "id": "x", "data": {}}, "params"),
])
def test_upsert_refuses_an_entity_without_id_or_both_forms_at_once(foundry, params, field):
    refused(foundry.execute("data/upsert", {"collection": R, **params}), "invalid_input", field)


def test_a_publish_target_template_is_rendered_from_the_recipe_and_recorded(
        foundry, recipe_data, forge_env):
    from uuid import UUID

    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = create(foundry, data)
    started = ok(foundry.execute("forge/run", {
        "recipeId": recipe_id, "wait": False,
        "publishTarget": {"org": "CambrianTech",
                          "repoTemplate": "{base}-{domain}-{name}-v{version}"}}))
    state = foundry.runs.get_run(UUID(started["runId"])).state
    # base: the last part of source.baseModel; domain: the first tag (no train stage names
    # one); name and version: the recipe's.
    assert state["publishTarget"] == ("hf://CambrianTech/tiny-code-tiny-llama-code-forged-v"
                                      + data["version"])
    # The GGUF tiers in a repo of their own, as the URL form's ?gguf= asks.
    for gguf in ("separate", "CambrianTech/tiny-GGUF"):
        started = ok(foundry.execute("forge/run", {
            "recipeId": recipe_id, "wait": False,
            "publishTarget": {"org": "CambrianTech", "repoTemplate": "{base}", "gguf": gguf}}))
        state = foundry.runs.get_run(UUID(started["runId"])).state
        assert state["publishTarget"] == f"hf://CambrianTech/tiny?gguf={gguf}"


@pytest.mark.parametrize(("target", "field"), [
    ({"org": "Cambrian Tech", "repoTemplate": "{base}"}, "publishTarget.template.org"),
    ({"org": "c", "repoTemplate": "{base}-{secret}"}, "publishTarget.template.repoTemplate"),
    ({"org": "c", "repoTemplate": "{base"}, "publishTarget.template.repoTemplate"),
    ({"repoTemplate": "{base}"}, "publishTarget.template.org"),
    ({"org": "c", "gguf": "elsewhere"}, "publishTarget.template.gguf"),
    ("ftp://x/y", "publishTarget.url"),
])
def test_a_bad_publish_target_is_refused_naming_the_part(foundry, recipe_data, target, field):
    recipe_id = create(foundry, recipe_data)
    result = foundry.execute("forge/run", {"recipeId": recipe_id, "publishTarget": target})
    refused(result, "invalid_input", field)


# --- idempotency keys bind the params -------------------------------------------------------

def test_a_forge_run_command_id_reused_for_another_recipe_is_a_conflict(
        foundry, recipe_data, forge_env):
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    # Recipe names are unique among live recipes (#16 item 6): the second gets its own.
    first_recipe, other_recipe = create(foundry, data), create(foundry, {**data, "name": "b"})
    first = ok(foundry.execute("forge/run", {"recipeId": first_recipe, "wait": True,
                                             "commandId": "nightly-1"}))
    again = ok(foundry.execute("forge/run", {"recipeId": first_recipe, "wait": True,
                                             "commandId": "nightly-1"}))
    assert again["repeated"] is True and again["runId"] == first["runId"]
    result = foundry.execute("forge/run", {"recipeId": other_recipe, "commandId": "nightly-1"})
    assert result["success"] is False and result["errorCode"] == "command_conflict", result
    assert "forge/run" in result["error"] and first["runId"] in result["error"]


def test_a_data_command_id_repeated_with_the_same_params_is_the_first_result(
        foundry, recipe_data):
    created = ok(foundry.execute("data/create", {"collection": R, "data": recipe_data,
                                                 "commandId": "c-1"}))
    again = ok(foundry.execute("data/create", {"collection": R, "data": recipe_data,
                                               "commandId": "c-1"}))
    assert again["id"] == created["id"]
    edit = {"collection": R, "id": created["id"], "data": {"description": "two"},
            "commandId": "e-1"}
    first, repeat = ok(foundry.execute("data/update", edit)), None
    before = count_events(foundry)
    repeat = ok(foundry.execute("data/update", edit))
    assert repeat["newRevision"] == first["newRevision"] == 2 and count_events(foundry) == before
    entity = {**recipe_data, "id": str(uuid.uuid4()), "name": "upserted"}  # names are unique
    up = {"collection": R, "entity": entity, "commandId": "u-1"}
    assert ok(foundry.execute("data/upsert", up))["created"] is True
    ok(foundry.execute("data/upsert", up))  # the same command again: no conflict
    gone = {"collection": R, "id": created["id"], "commandId": "d-1"}
    ok(foundry.execute("data/delete", gone))
    ok(foundry.execute("data/delete", gone))


@pytest.mark.parametrize("second", ["other data", "other recipe", "other command"])
def test_a_data_command_id_reused_with_other_params_is_a_conflict_naming_the_first(
        foundry, recipe_data, second):
    target = create(foundry, recipe_data)
    other = create(foundry, {**recipe_data, "name": "other"})  # names are unique
    first = ok(foundry.execute("data/update", {"collection": R, "id": target,
                                               "data": {"description": "first"},
                                               "commandId": "shared-id"}))
    before = count_events(foundry)
    params = {
        "other data": ("data/update", {"id": target, "data": {"description": "second"}}),
        "other recipe": ("data/update", {"id": other, "data": {"description": "first"}}),
        "other command": ("data/delete", {"id": target}),
    }[second]
    result = foundry.execute(params[0], {"collection": R, **params[1],
                                         "commandId": "shared-id"})
    assert result["success"] is False and result["errorCode"] == "command_conflict", result
    assert result["error"].startswith("commandId: 'shared-id' was already used by ")
    assert f"recipe {target} (revision {first['newRevision']})" in result["error"], result
    assert count_events(foundry) == before  # nothing applied, nothing recorded


def test_a_create_command_id_reused_with_other_data_is_a_conflict(foundry, recipe_data):
    ok(foundry.execute("data/create", {"collection": R, "data": recipe_data,
                                       "commandId": "make-1"}))
    result = foundry.execute("data/create", {"collection": R, "commandId": "make-1",
                                             "data": {**recipe_data, "description": "else"}})
    assert result["errorCode"] == "command_conflict" and "data/create" in result["error"], \
        result
