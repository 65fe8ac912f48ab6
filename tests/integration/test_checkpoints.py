"""Signed checkpoints over both event logs (#17 item 3): a rewrite that every replay agrees with
(what an attacker with database write access can do) is caught once a checkpoint covers it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.conftest import ok
from tests.integration.test_damaged_records import _set_state

R = "forge_recipes"


def _setup(foundry: Any, forge_env: Path, recipe_data: dict[str, Any]) -> tuple[str, str, str]:
    from foundry.adapters.publishing import attestation

    attestation.create_key(forge_env.parent / "keys")
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run_id = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))["runId"]
    return recipe_id, run_id, data["name"]


def test_checkpoints_verify_and_count_what_they_do_not_cover(
        forge_env: Path, foundry: Any, recipe_data: dict[str, Any]) -> None:
    _setup(foundry, forge_env, recipe_data)
    first = ok(foundry.execute("audit/checkpoint", {}))["checkpoint"]
    assert first["seq"] == 1 and first["logs"]["runs"]["rows"] > 0
    ok(foundry.execute("data/create", {"collection": R, "data": {
        **copy.deepcopy(recipe_data), "name": "later"}}))
    before = ok(foundry.execute("audit/checkpoints", {}))
    assert before["ok"] is True and before["rowsAfterLastCheckpoint"]["recipes"] == 1, before
    second = ok(foundry.execute("audit/checkpoint", {}))["checkpoint"]
    assert second["seq"] == 2 and second["logs"]["recipes"]["upto"] > first["logs"]["recipes"][
        "upto"]
    after = ok(foundry.execute("audit/checkpoints", {}))
    assert after["ok"] is True and after["checkpoints"] == 2, after
    assert after["rowsAfterLastCheckpoint"] == {"recipes": 0, "runs": 0}


def test_a_rewritten_recipe_event_and_a_deleted_run_event_are_found(
        forge_env: Path, foundry: Any, recipe_data: dict[str, Any]) -> None:
    recipe_id, run_id, name = _setup(foundry, forge_env, recipe_data)
    ok(foundry.execute("audit/checkpoint", {}))

    _set_state(foundry.recipes, foundry.config.kind, recipe_id, 1,
               lambda s: s.replace(json.dumps(name).encode(), b'"rewritten"', 1))
    recorder = foundry.runs.recorder
    with recorder.datastore.transaction(commit=True) as curs:
        if foundry.config.kind == "sqlite":
            curs.execute(f"DELETE FROM {recorder.events_table_name} WHERE originator_id = ? "
                         "AND originator_version = 3", (UUID(run_id).hex,))
        else:
            curs.execute(f'DELETE FROM "{recorder.datastore.schema}".'
                         f"{recorder.events_table_name} WHERE originator_id = %s "
                         "AND originator_version = 3", (UUID(run_id),))

    audit = ok(foundry.execute("audit/checkpoints", {}))

    assert audit["ok"] is False, audit
    text = " | ".join(audit["problems"])
    assert "checkpoint 1: the recipes log" in text and "checkpoint 1: the runs log" in text, text
    assert "signature" not in text  # the checkpoint itself is intact


def test_an_edited_checkpoint_does_not_verify(
        forge_env: Path, foundry: Any, recipe_data: dict[str, Any]) -> None:
    from foundry.adapters.publishing.checkpoints import CHECKPOINTS_FILE

    _setup(foundry, forge_env, recipe_data)
    ok(foundry.execute("audit/checkpoint", {}))
    path = foundry.state_dir / CHECKPOINTS_FILE
    record = json.loads(path.read_text())
    record["logs"]["runs"]["rows"] += 1  # anything the signature covers
    path.write_text(json.dumps(record) + "\n")

    audit = ok(foundry.execute("audit/checkpoints", {}))
    assert audit["problems"] == ["checkpoint 1: signature does not verify"], audit


def test_a_checkpoint_needs_a_signing_key(forge_env: Path, foundry: Any) -> None:
    refused = foundry.execute("audit/checkpoint", {})
    assert refused["success"] is False and refused["errorCode"] == "invalid_input", refused
    assert "keys create" in refused["error"]
