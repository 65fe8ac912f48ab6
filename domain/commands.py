"""The params of each data/* command, as frozen models: the contract callers speak.

Params arrive camelCase (`expectedRevision`, `orderBy`); snake_case is accepted too. Unknown
params are refused, so a typo is an error rather than a silently ignored option.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from foundry.domain.values.base import Frozen

RECIPES = "forge_recipes"
ARTIFACTS = "forge_artifacts"
Collection = Literal["forge_recipes", "forge_artifacts"]

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


class _Write(Frozen):
    collection: Collection
    command_id: str | None = Field(default=None, min_length=1, max_length=200)
    author: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=2000)


class CreateEntity(_Write):
    data: dict[str, Any]
    id: str | None = None


class UpdateEntity(_Write):
    id: str
    data: dict[str, Any]
    expected_revision: int | None = Field(default=None, ge=1)


class UpsertEntity(_Write):
    id: str
    data: dict[str, Any]
    expected_revision: int | None = Field(default=None, ge=1)


class DeleteEntity(_Write):
    id: str
    expected_revision: int | None = Field(default=None, ge=1)


class ForkRecipe(Frozen):
    collection: Literal["forge_recipes"] = "forge_recipes"
    id: str
    data: dict[str, Any] = Field(default_factory=dict)
    command_id: str | None = Field(default=None, min_length=1, max_length=200)
    author: str = Field(default="", max_length=200)


class ReadEntity(Frozen):
    collection: Collection
    id: str


class OrderBy(Frozen):
    field: str
    direction: Literal["asc", "desc", "ASC", "DESC"] = "asc"


class ListEntities(Frozen):
    collection: Collection
    filter: dict[str, Any] | None = None
    order_by: list[OrderBy] | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = None
    include_archived: bool = False


class CountEntities(Frozen):
    collection: Collection
    filter: dict[str, Any] | None = None
    include_archived: bool = False


class EntityHistory(Frozen):
    collection: Literal["forge_recipes"]
    id: str
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    after_revision: int = Field(default=0, ge=0)


# <class>@<site>, <class>@any or any. Each name is also a valid Ray label value (at most 63
# characters, alphanumeric at both ends), so the Ray dispatcher can select nodes by it.
_NODE_NAME = r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?"
HARDWARE_NODE = rf"^(any|{_NODE_NAME}@(any|{_NODE_NAME}))$"
PUBLISH_TARGET = r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|file:///\S+)$"


class RunRecipe(Frozen):
    """forge/run: execute a pinned recipe version on a hardware node."""

    recipe_id: str
    recipe_version: str | None = None
    hardware_node: str = Field(
        default="cpu@local", pattern=HARDWARE_NODE,
        description="<class>@<site>, <class>@any or any; lowercase, e.g. rtx-5090@lab-2",
    )
    publish_target: str | None = Field(default=None, pattern=PUBLISH_TARGET)
    command_id: str | None = Field(default=None, min_length=1, max_length=200)
    wait: bool = True
    requested_by: str = Field(default="", max_length=200)


class RunRef(Frozen):
    run_id: str


class CancelRun(Frozen):
    run_id: str
    reason: str = Field(default="", max_length=2000)
    by: str = Field(default="", max_length=200)


class ResumeRun(Frozen):
    run_id: str
    wait: bool = True


class ListRuns(Frozen):
    filter: dict[str, Any] | None = None
    order_by: list[OrderBy] | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = None


class PublishArtifact(Frozen):
    """forge/publish: publish a sealed artifact (by artifact or run id) to a target."""

    id: str
    target: str = Field(pattern=PUBLISH_TARGET)
    force: bool = False
    reason: str = Field(default="", max_length=2000)
