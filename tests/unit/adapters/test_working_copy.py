"""RecipeBook hands out copies of cached recipes that are cheaper than a deepcopy: a command
applied to the copy must leave the cached aggregate exactly as it was (an edit that is then
refused or fails to save must not leak into the next command)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from foundry.adapters.store.recipe_book import working_copy
from foundry.domain.recipe import Recipe

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tiny-recipe.json"


def recipe() -> Recipe:
    r = Recipe.create(id=uuid4(), data=json.loads(EXAMPLE.read_text()), author="a",
                      command_id=None)
    r.collect_events()
    r.pin_version(run_id="run-0")
    r.collect_events()
    return r


def state(r: Recipe) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in r.__dict__.items() if k != "_pending_events"}) | {
        "pending": len(r.pending_events)}


COMMANDS: dict[str, Callable[[Recipe], Any]] = {
    "edit a top-level field": lambda r: r.edit({**r.data, "version": "0.2.0", "cycles": 7},
                                               author="b", reason="", command_id=None),
    "edit a nested field": lambda r: r.edit(
        {**r.data, "version": "0.2.0", "source": {**r.data["source"], "baseModel": "other"},
         "tags": [*r.data["tags"], "new"]}, author="b", reason="", command_id=None),
    "remove a field": lambda r: r.edit(
        {**{k: v for k, v in r.data.items() if k != "description"}, "version": "0.2.0"},
        author="b", reason="", command_id=None),
    "pin a version": lambda r: (r.edit({**r.data, "version": "0.3.0"}, author="b", reason="",
                                       command_id=None), r.pin_version(run_id="run-1")),
    "archive": lambda r: r.archive(author="b", reason="", command_id=None),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_on_the_working_copy_leaves_the_original_untouched(name):
    original = recipe()
    before = state(original)
    work = working_copy(original)
    COMMANDS[name](work)
    assert work.pending_events and state(work) != before  # the command did change the copy
    assert state(original) == before


def test_the_working_copy_equals_the_original():
    original = recipe()
    assert state(working_copy(original)) == state(original)
    assert type(working_copy(original)) is Recipe
