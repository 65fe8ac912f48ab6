"""The Recipe aggregate on its own (no store): what each command records, what it refuses,
and that a replay of its events gives the same recipe."""

from __future__ import annotations

import copy
from typing import Any
from uuid import uuid4

import pytest

from foundry.domain.errors import PinnedVersionError, RecipeArchivedError
from foundry.domain.recipe import Recipe

DATA: dict[str, Any] = {
    "name": "tiny", "version": "1.0.0", "baseModel": "tiny/base",
    "stages": [{"type": "prune", "level": 0.2}], "tags": ["a"],
}


def new_recipe(**overrides: Any) -> Recipe:
    return Recipe.create(id=uuid4(), data={**copy.deepcopy(DATA), **overrides},
                         author="ana", command_id=None)


def event_names(recipe: Recipe) -> list[str]:
    return [type(e).__name__ for e in recipe.collect_events()]


def test_a_new_recipe_holds_a_copy_of_its_data_at_revision_one():
    data = copy.deepcopy(DATA)
    recipe = Recipe.create(id=uuid4(), data=data, author="ana", command_id="c-1")
    data["name"] = "changed by the caller afterwards"
    assert recipe.data["name"] == "tiny"
    assert recipe.revision == 1
    assert recipe.recipe_version == "1.0.0"
    assert not recipe.archived
    assert event_names(recipe) == ["Created"]


def test_a_fork_records_its_parent_in_its_data():
    parent = new_recipe()
    child = Recipe.fork(id=uuid4(), data={**DATA, "name": "child"}, parent_recipe_id=str(
        parent.id), author="ben", command_id=None)
    assert child.data["parentRecipeId"] == str(parent.id)
    assert child.data["name"] == "child"
    assert event_names(child) == ["Forked"]


def test_an_edit_records_each_changed_field_with_old_and_new_and_null_removes_a_field():
    recipe = new_recipe()
    changes = recipe.edit({**DATA, "name": "renamed", "tags": None, "notes": "new"},
                          author="ana", reason="why not", command_id="c-2")
    assert changes == [
        {"field": "name", "old": "tiny", "new": "renamed"},
        {"field": "notes", "old": None, "new": "new"},
        {"field": "tags", "old": ["a"], "new": None},
    ]
    assert recipe.data == {**{k: v for k, v in DATA.items() if k != "tags"},
                           "name": "renamed", "notes": "new"}
    assert recipe.revision == 2


def test_an_edit_that_changes_nothing_records_nothing():
    recipe = new_recipe()
    recipe.collect_events()
    assert recipe.edit(copy.deepcopy(DATA), author="ana", reason="", command_id=None) == []
    assert recipe.revision == 1
    assert recipe.collect_events() == []


def test_identity_and_lineage_fields_are_never_changed_by_an_edit():
    recipe = new_recipe(id="r-1", parentRecipeId="p-1")
    changes = recipe.edit({**DATA, "id": "other", "parentRecipeId": None},
                          author="ana", reason="", command_id=None)
    assert changes == []
    assert recipe.data["id"] == "r-1"
    assert recipe.data["parentRecipeId"] == "p-1"


def test_the_content_hash_ignores_the_id_and_follows_the_content():
    a, b = new_recipe(id="one"), new_recipe(id="two")
    assert a.content_hash() == b.content_hash()
    assert a.content_hash().startswith("sha256:")
    b.edit({**DATA, "id": "two", "name": "other"}, author="ana", reason="", command_id=None)
    assert a.content_hash() != b.content_hash()


def test_before_a_pin_an_edit_may_keep_the_version():
    recipe = new_recipe()
    recipe.edit({**DATA, "name": "x"}, author="ana", reason="", command_id=None)
    assert recipe.recipe_version == "1.0.0"


def test_a_pinned_version_can_only_be_edited_to_a_strictly_greater_one():
    recipe = new_recipe()
    recipe_hash = recipe.pin_version(run_id="run-1")
    assert recipe_hash == recipe.content_hash()
    assert recipe.pinned_versions == ["1.0.0"]
    for version in ("1.0.0", "0.9.0", "1.0.0-rc.1", "1.0.0+build.2"):
        with pytest.raises(PinnedVersionError) as caught:
            recipe.edit({**DATA, "name": "x", "version": version}, author="ana", reason="",
                        command_id=None)
        assert (caught.value.version, caught.value.attempted) == ("1.0.0", version)
    with pytest.raises(PinnedVersionError):  # no version given keeps the pinned one
        recipe.edit({k: v for k, v in DATA.items() if k != "version"} | {"name": "x"},
                    author="ana", reason="", command_id=None)
    assert recipe.data == DATA  # nothing was applied
    recipe.edit({**DATA, "name": "x", "version": "1.0.1"}, author="ana", reason="",
                command_id=None)
    assert (recipe.recipe_version, recipe.data["name"]) == ("1.0.1", "x")
    # The new version is not pinned yet, so it may be edited in place.
    recipe.edit({**DATA, "name": "y", "version": "1.0.1"}, author="ana", reason="",
                command_id=None)


def test_pinning_the_same_version_twice_records_two_pins_but_lists_it_once():
    recipe = new_recipe()
    recipe.pin_version(run_id="run-1")
    recipe.pin_version(run_id="run-2")
    assert recipe.pinned_versions == ["1.0.0"]
    assert event_names(recipe) == ["Created", "VersionPinned", "VersionPinned"]


def test_an_archived_recipe_refuses_edits_and_pins_and_archiving_twice_records_once():
    recipe = new_recipe()
    assert recipe.archive(author="ana", reason="done", command_id=None) is True
    assert recipe.archive(author="ana", reason="again", command_id=None) is False
    with pytest.raises(RecipeArchivedError):
        recipe.edit({**DATA, "name": "x"}, author="ana", reason="", command_id=None)
    with pytest.raises(RecipeArchivedError):
        recipe.pin_version(run_id="run-1")
    assert event_names(recipe) == ["Created", "Archived"]


def test_a_replay_of_the_stored_events_gives_the_same_recipe(replay: Any):
    recipe = Recipe.fork(id=uuid4(), data=copy.deepcopy(DATA), parent_recipe_id="p-1",
                         author="ana", command_id="c-1")
    recipe.pin_version(run_id="run-1")
    recipe.edit({**DATA, "version": "1.1.0", "tags": None, "stages": []}, author="ana",
                reason="r", command_id="c-2")
    recipe.archive(author="ana", reason="done", command_id=None)
    copy_of = replay(recipe.collect_events())
    assert isinstance(copy_of, Recipe)
    assert copy_of.data == recipe.data
    assert copy_of.data["parentRecipeId"] == "p-1"
    assert (copy_of.revision, copy_of.archived, copy_of.pinned_versions) == (
        recipe.revision, True, ["1.0.0"])
    assert copy_of.content_hash() == recipe.content_hash()
