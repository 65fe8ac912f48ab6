"""foundry audit recipes (#17 item 3): recipe events replayed and checked against the view and
against the run log's record of each pinned version. An in-place rewrite of a recipe event
used to go unnoticed (no command audited recipe events)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.conftest import ok
from tests.integration.test_damaged_records import _set_state

R = "forge_recipes"


@pytest.fixture
def forged(store_url: str, forge_env: Path, recipe_data: dict[str, Any]) -> Any:
    """(store url, recipe id, run id, the pin's event version, the recipe name): a recipe
    forged once on the fake set, audited clean."""
    from foundry.adapters.bootstrap import Foundry

    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    with Foundry.open(store_url) as f:
        recipe_id = ok(f.execute("data/create", {"collection": R, "data": data}))["id"]
        run_id = ok(f.execute("forge/run", {"recipeId": recipe_id}))["runId"]
        events = f.recipes.recorder.select_events(UUID(recipe_id))
        pin = next(e.originator_version for e in events if e.topic.endswith("VersionPinned"))
        assert ok(f.execute("audit/recipes", {}))["ok"] is True
    return store_url, recipe_id, run_id, pin, data["name"]


def _audit(store_url: str) -> dict[str, Any]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store_url) as f:
        return ok(f.execute("audit/recipes", {}))


def _rewrite(store_url: str, recipe_id: str, version: int, old: bytes, new: bytes) -> None:
    from foundry.adapters.bootstrap import Foundry

    def edit(state: bytes) -> bytes:
        assert old in state, (old, state[:300])
        return state.replace(old, new, 1)

    with Foundry.open(store_url) as f:
        _set_state(f.recipes, f.config.kind, recipe_id, version, edit)


def test_a_recipe_event_rewritten_in_place_is_found(forged: Any) -> None:
    store_url, recipe_id, _run_id, _pin, name = forged
    _rewrite(store_url, recipe_id, 1, json.dumps(name).encode(), b'"rewritten"')

    audit = _audit(store_url)

    assert audit["ok"] is False, audit
    [report] = audit["problems"]
    assert report["recipeId"] == recipe_id
    text = " | ".join(report["problems"])
    assert "view differs from replay at doc.name" in text, text
    assert "pinned hash" in text and "replay gives" in text, text


def test_a_consistent_rewrite_of_the_recipe_log_alone_is_caught_by_the_run_log(
        forged: Any) -> None:
    """The attacker also recomputes the pin's hash: the run that pinned the version still
    holds the original one."""
    from foundry.adapters.bootstrap import Foundry
    from foundry.domain.hashing import content_hash

    store_url, recipe_id, run_id, pin, name = forged
    with Foundry.open(store_url) as f:
        recipe = f.recipes.get_recipe(UUID(recipe_id))
        original = recipe.content_hash()
        forged_hash = content_hash({**{k: v for k, v in recipe.data.items() if k != "id"},
                                    "name": "rewritten"})
    _rewrite(store_url, recipe_id, 1, json.dumps(name).encode(), b'"rewritten"')
    _rewrite(store_url, recipe_id, pin, original.encode(), forged_hash.encode())

    audit = _audit(store_url)

    text = " | ".join(audit["problems"][0]["problems"])
    assert f"run {run_id} recorded {original}, the pin says {forged_hash}" in text, text
    assert "replay gives" not in text  # the pin itself is consistent with the rewrite
