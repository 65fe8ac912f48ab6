"""The RecipeBook application: the unit of work for recipe commands.

Every write goes: (maybe return the stored result of a repeated command id) -> load ->
check expectedRevision -> call the aggregate -> save events and the command id in one
transaction. A concurrent writer that saved first makes `save()` raise IntegrityError;
that becomes a RevisionConflictError naming the current revision, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from foundry.domain.errors import AlreadyExistsError, RecipeNotFoundError, RevisionConflictError
from foundry.domain.recipe import Recipe

Result = dict[str, Any]


def recipe_id_for_command(command_id: str) -> UUID:
    """A create with a command id and no explicit id gets a deterministic id."""
    return uuid5(NAMESPACE_URL, f"foundry/recipe-command/{command_id}")


class RecipeBook(Application[UUID]):
    """Recipes: create, edit, fork, archive, pin."""

    name = "RecipeBook"
    snapshotting_intervals = {Recipe: 50}

    def get_recipe(self, recipe_id: UUID, version: int | None = None) -> Recipe:
        try:
            recipe: Recipe = self.repository.get(recipe_id, version=version)
        except AggregateNotFoundError:
            raise RecipeNotFoundError(str(recipe_id)) from None
        return recipe

    def prior_result(self, command_id: str | None) -> Result | None:
        if not command_id:
            return None
        return self.recorder.command_result(command_id)  # type: ignore[attr-defined,no-any-return]

    def _save(self, recipe: Recipe, command_id: str | None, result: Result) -> Result:
        """Save pending events with the command id; map a lost race to a typed error."""
        try:
            self.save(recipe, command_id=command_id, command_result=result)
        except IntegrityError:
            prior = self.prior_result(command_id)
            if prior is not None:
                return prior
            current = self.get_recipe(recipe.id).revision
            raise RevisionConflictError(str(recipe.id), recipe.revision - 1, current) from None
        return result

    def _idempotent(self, command_id: str | None, action: Callable[[], Result]) -> Result:
        prior = self.prior_result(command_id)
        return prior if prior is not None else action()

    def create_recipe(
        self, data: dict[str, Any], *, recipe_id: UUID | None, author: str,
        command_id: str | None, reason: str = "",
    ) -> Result:
        def action() -> Result:
            rid = recipe_id or (recipe_id_for_command(command_id) if command_id else uuid4())
            recipe = Recipe.create(
                id=rid, data={**data, "id": str(rid)}, author=author, command_id=command_id,
                reason=reason,
            )
            result = {"id": str(rid), "revision": recipe.revision}
            try:
                self.save(recipe, command_id=command_id, command_result=result)
            except IntegrityError:
                prior = self.prior_result(command_id)
                if prior is not None:
                    return prior
                raise AlreadyExistsError(str(rid)) from None
            return result

        return self._idempotent(command_id, action)

    def edit_recipe(
        self, recipe_id: UUID,
        new_data: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]], *,
        expected_revision: int | None, author: str, reason: str, command_id: str | None,
    ) -> Result:
        """Edit to `new_data`, or to `new_data(current data)`: a partial update must merge
        into the data it is saved on top of, or it would undo a concurrent edit."""
        def action() -> Result:
            recipe = self.get_recipe(recipe_id)
            previous = recipe.revision
            if expected_revision is not None and expected_revision != previous:
                raise RevisionConflictError(str(recipe_id), expected_revision, previous)
            data = new_data(dict(recipe.data)) if callable(new_data) else new_data
            changes = recipe.edit(
                {**data, "id": str(recipe_id)}, author=author, reason=reason,
                command_id=command_id,
            )
            result = {
                "id": str(recipe_id), "previousRevision": previous,
                "newRevision": recipe.revision, "changes": changes,
            }
            return self._save(recipe, command_id, result)

        return self._idempotent(command_id, action)

    def archive_recipe(
        self, recipe_id: UUID, *, expected_revision: int | None, author: str, reason: str,
        command_id: str | None,
    ) -> Result:
        def action() -> Result:
            recipe = self.get_recipe(recipe_id)
            previous = recipe.revision
            if expected_revision is not None and expected_revision != previous:
                raise RevisionConflictError(str(recipe_id), expected_revision, previous)
            deleted = recipe.archive(author=author, reason=reason, command_id=command_id)
            result = {
                "id": str(recipe_id), "deleted": deleted, "previousRevision": previous,
                "newRevision": recipe.revision,
            }
            return self._save(recipe, command_id, result)

        return self._idempotent(command_id, action)

    def fork_recipe(
        self, parent_id: UUID, overrides: dict[str, Any], *, author: str,
        command_id: str | None,
    ) -> Result:
        def action() -> Result:
            parent = self.get_recipe(parent_id)
            rid = recipe_id_for_command(command_id) if command_id else uuid4()
            data = {**parent.data, **overrides, "id": str(rid)}
            child = Recipe.fork(
                id=rid, data=data, parent_recipe_id=str(parent_id), author=author,
                command_id=command_id,
            )
            result = {"id": str(rid), "parentRecipeId": str(parent_id), "revision": 1}
            return self._save(child, command_id, result)

        return self._idempotent(command_id, action)

    def pin_recipe_version(self, recipe_id: UUID, *, run_id: str) -> tuple[Recipe, str]:
        """Pin the current version for a run; returns the recipe as pinned and its hash."""
        for _ in range(10):
            recipe = self.get_recipe(recipe_id)
            recipe_hash = recipe.pin_version(run_id=run_id)
            try:
                self.save(recipe)
            except IntegrityError:
                continue  # an edit landed in between: pin what is current now
            return recipe, recipe_hash
        raise RevisionConflictError(str(recipe_id), recipe.revision, recipe.revision)
