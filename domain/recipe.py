"""The Recipe aggregate: the authored input of a forge, edited one immutable event at a time.

State is the recipe in wire form (camelCase, JSON-native), so that replaying the stored
events gives exactly what was saved (the library's JSON transcoder turns tuples into lists
and int keys into strings; a JSON-native state has nothing to lose).

Rules are checked in the public methods; the `@event` bodies only apply what was decided,
because they run again on every replay.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from foundry.domain.errors import PinnedVersionError, RecipeArchivedError
from foundry.domain.hashing import content_hash
from foundry.domain.semver import is_greater

# Fields that are identity or lineage, not authored content: they never change by an edit.
IMMUTABLE_FIELDS = frozenset({"id", "parentRecipeId"})


class Recipe(Aggregate):
    """A ForgeRecipe entity."""

    TOPIC = "foundry.Recipe"

    class Created(Aggregate.Created):
        TOPIC = "foundry.Recipe.Created"
        data: dict[str, Any]
        author: str
        command_id: str | None
        parent_recipe_id: str | None
        reason: str

    class Forked(Created):
        """Created as a copy of another recipe; `parent_recipe_id` is its lineage."""

        TOPIC = "foundry.Recipe.Forked"

    class Edited(Aggregate.Event):
        TOPIC = "foundry.Recipe.Edited"
        changes: list[dict[str, Any]]
        author: str
        reason: str
        command_id: str | None

    class VersionPinned(Aggregate.Event):
        TOPIC = "foundry.Recipe.VersionPinned"
        version: str
        recipe_hash: str
        run_id: str

    class Archived(Aggregate.Event):
        TOPIC = "foundry.Recipe.Archived"
        author: str
        reason: str
        command_id: str | None

    @event(Created)
    def __init__(
        self,
        data: dict[str, Any],
        author: str,
        command_id: str | None,
        parent_recipe_id: str | None = None,
        reason: str = "",
    ) -> None:
        self.data = dict(data)
        if parent_recipe_id is not None:
            self.data["parentRecipeId"] = parent_recipe_id
        self.archived = False
        self.pinned_versions: list[str] = []

    @classmethod
    def create(
        cls,
        *,
        id: UUID,
        data: dict[str, Any],
        author: str,
        command_id: str | None,
        reason: str = "",
    ) -> Recipe:
        """A new recipe with a chosen id (uuid4, or uuid5 of a command id)."""
        return cls._create(
            cls.Created, id=id, data=data, author=author, command_id=command_id,
            parent_recipe_id=None, reason=reason,
        )

    @classmethod
    def fork(
        cls,
        *,
        id: UUID,
        data: dict[str, Any],
        parent_recipe_id: str,
        author: str,
        command_id: str | None,
    ) -> Recipe:
        """A new recipe whose lineage points at its parent (one-directional)."""
        return cls._create(
            cls.Forked,
            id=id,
            data=data,
            author=author,
            command_id=command_id,
            parent_recipe_id=parent_recipe_id,
            reason="",
        )

    # --- queries -------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return int(self.version)

    @property
    def recipe_version(self) -> str:
        return str(self.data["version"])

    def content_hash(self) -> str:
        """Hash of the authored content (without the entity id)."""
        return content_hash({k: v for k, v in self.data.items() if k != "id"})

    def diff(self, new_data: dict[str, Any]) -> list[dict[str, Any]]:
        """The field-level changes that would turn the current data into `new_data`."""
        keys = sorted((set(self.data) | set(new_data)) - IMMUTABLE_FIELDS)
        return [
            {"field": k, "old": self.data.get(k), "new": new_data.get(k)}
            for k in keys
            if self.data.get(k) != new_data.get(k)
        ]

    # --- commands ------------------------------------------------------------------------

    def edit(
        self, new_data: dict[str, Any], *, author: str, reason: str, command_id: str | None
    ) -> list[dict[str, Any]]:
        """Record the changes from the current data to `new_data`; returns them (maybe none)."""
        if self.archived:
            raise RecipeArchivedError(str(self.id))
        changes = self.diff(new_data)
        if not changes:
            return []
        new_version = str(new_data.get("version", self.recipe_version))
        if self.recipe_version in self.pinned_versions and not is_greater(
            new_version, self.recipe_version
        ):
            raise PinnedVersionError(str(self.id), self.recipe_version, new_version)
        self._edited(changes=changes, author=author, reason=reason, command_id=command_id)
        return changes

    @event(Edited)
    def _edited(
        self, changes: list[dict[str, Any]], author: str, reason: str, command_id: str | None
    ) -> None:
        for change in changes:
            if change["new"] is None:
                self.data.pop(change["field"], None)
            else:
                self.data[change["field"]] = change["new"]

    def pin_version(self, *, run_id: str) -> str:
        """A run pins the current version; later edits must raise it. Returns the hash."""
        if self.archived:
            raise RecipeArchivedError(str(self.id))
        recipe_hash = self.content_hash()
        self._version_pinned(version=self.recipe_version, recipe_hash=recipe_hash, run_id=run_id)
        return recipe_hash

    @event(VersionPinned)
    def _version_pinned(self, version: str, recipe_hash: str, run_id: str) -> None:
        if version not in self.pinned_versions:
            self.pinned_versions.append(version)

    def archive(self, *, author: str, reason: str, command_id: str | None) -> bool:
        """Archive (the data/delete of this store: history is kept). False if already so."""
        if self.archived:
            return False
        self._archived(author=author, reason=reason, command_id=command_id)
        return True

    @event(Archived)
    def _archived(self, author: str, reason: str, command_id: str | None) -> None:
        self.archived = True
