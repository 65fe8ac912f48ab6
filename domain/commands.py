"""The params of each data/* command, as frozen models: the contract callers speak.

Params arrive camelCase (`expectedRevision`, `orderBy`); snake_case is accepted too. Unknown
params are refused, so a typo is an error rather than a silently ignored option.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Strict, Tag, field_validator, model_validator

from foundry.domain.values.base import Frozen

RECIPES = "forge_recipes"
ARTIFACTS = "forge_artifacts"
Collection = Literal["forge_recipes", "forge_artifacts"]

MAX_LIMIT = 500
DEFAULT_LIMIT = 100

# JSON's `true` is not the number 1: pydantic's lax mode would take it as one.
StrictInt = Annotated[int, Strict()]


class _NoStoreChoice(Frozen):
    """Continuum's params that pick a store per call. Here the store is the process's
    (FOUNDRY_DATABASE_URL or --db), so they are refused with that pointer rather than as
    unknown params or, worse, ignored."""

    backend: Any = None
    db_handle: Any = None

    @model_validator(mode="after")
    def _refuse_store_choice(self) -> _NoStoreChoice:
        for name, value in (("backend", self.backend), ("dbHandle", self.db_handle)):
            if value is not None:
                msg = (f"{name}: not supported here; Foundry's store is the one the process "
                       "opened (FOUNDRY_DATABASE_URL or --db), never chosen per call")
                raise ValueError(msg)
        return self


class _Write(_NoStoreChoice):
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
    expected_revision: StrictInt | None = Field(default=None, ge=1)


class UpsertEntity(_Write):
    """data/upsert: `id` + `data`, or `entity`: the whole recipe with its id inside."""

    id: str | None = None
    data: dict[str, Any] | None = None
    entity: dict[str, Any] | None = None
    expected_revision: StrictInt | None = Field(default=None, ge=1)

    @field_validator("entity")
    @classmethod
    def _entity_has_id(cls, entity: dict[str, Any] | None) -> dict[str, Any] | None:
        if entity is not None and not isinstance(entity.get("id"), str):
            msg = "must carry its id as a string (or give id and data instead of entity)"
            raise ValueError(msg)
        return entity

    @model_validator(mode="after")
    def _one_form(self) -> UpsertEntity:
        if self.entity is not None and (self.id is not None or self.data is not None):
            msg = "give either entity, or id and data, not both"
            raise ValueError(msg)
        if self.entity is None and (self.id is None or self.data is None):
            msg = "give id and data, or entity (the whole recipe with its id)"
            raise ValueError(msg)
        return self

    @property
    def target_id(self) -> str:
        return str(self.entity["id"]) if self.entity is not None else str(self.id)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.entity if self.entity is not None else self.data or {})


class DeleteEntity(_Write):
    id: str
    expected_revision: StrictInt | None = Field(default=None, ge=1)


class ForkRecipe(Frozen):
    collection: Literal["forge_recipes"] = "forge_recipes"
    id: str
    data: dict[str, Any] = Field(default_factory=dict)
    command_id: str | None = Field(default=None, min_length=1, max_length=200)
    author: str = Field(default="", max_length=200)


class ReadEntity(_NoStoreChoice):
    collection: Collection
    id: str


class OrderBy(Frozen):
    field: str
    direction: Literal["asc", "desc", "ASC", "DESC"] = "asc"


class ListEntities(_NoStoreChoice):
    """data/list, data/query. Continuum's semantics: `count` is the total matching the filter
    (every page), unless `skipCount` spares that query; `fields` projects each item (dotted
    paths; `id` always kept); `verbose: false` gives each item's summary fields only."""

    collection: Collection
    filter: dict[str, Any] | None = None
    order_by: list[OrderBy] | None = None
    limit: StrictInt = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = None
    include_archived: bool = False
    skip_count: bool = False
    fields: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, max_length=100)
    verbose: bool = True


class CountEntities(_NoStoreChoice):
    collection: Collection
    filter: dict[str, Any] | None = None
    include_archived: bool = False


class EntityHistory(Frozen):
    collection: Literal["forge_recipes"]
    id: str
    limit: StrictInt = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    after_revision: StrictInt = Field(default=0, ge=0)


# <class>@<site>, <class>@any or any. Each name is also a valid Ray label value (at most 63
# characters, alphanumeric at both ends), so the Ray dispatcher can select nodes by it.
_NODE_NAME = r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?"
HARDWARE_NODE = rf"^(any|{_NODE_NAME}@(any|{_NODE_NAME}))$"
_HUB_REPO = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
# `?gguf=separate|<org>/<name>`: the GGUF tiers in a repo of their own (publishing/gguf_repo.py)
PUBLISH_TARGET = rf"^(hf://{_HUB_REPO}(\?gguf=(separate|{_HUB_REPO}))?|file:///\S+)$"


_HUB_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
TEMPLATE_FIELDS = ("base", "domain", "name", "version")


class PublishTargetTemplate(Frozen):
    """A hub repo under `org`, named by `repoTemplate` with {base}, {domain}, {name} and
    {version} filled in from the recipe when the run is requested; `gguf` puts the GGUF tiers
    in a repo of their own, as the URL form's `?gguf=`: `separate` (the model's repo name +
    `-GGUF`) or `<org>/<name>`."""

    org: str = Field(pattern=_HUB_NAME)
    repo_template: str = Field(default="{base}-{domain}-forged", min_length=1, max_length=200)
    gguf: str | None = Field(default=None, pattern=rf"^(separate|{_HUB_REPO})$")

    @field_validator("repo_template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        import string

        try:
            names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as e:
            raise ValueError(f"is not a valid template: {e}") from None
        unknown = sorted(names - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join('{' + u + '}' for u in unknown)}; "
                             f"known: {', '.join('{' + t + '}' for t in TEMPLATE_FIELDS)}")
        return template


def _target_kind(value: Any) -> str:
    return "template" if isinstance(value, dict | PublishTargetTemplate) else "url"


# The URL string, or {org, repoTemplate}; the discriminator keeps an error to one branch.
PublishTarget = Annotated[
    Annotated[str, Field(pattern=PUBLISH_TARGET), Tag("url")]
    | Annotated[PublishTargetTemplate, Tag("template")],
    Discriminator(_target_kind),
]


class RunRecipe(Frozen):
    """forge/run: execute a pinned recipe version on a hardware node."""

    recipe_id: str
    recipe_version: str | None = None
    hardware_node: str = Field(
        default="cpu@local", pattern=HARDWARE_NODE,
        description="<class>@<site>, <class>@any or any; lowercase, e.g. rtx-5090@lab-2",
    )
    publish_target: PublishTarget | None = None
    command_id: str | None = Field(default=None, min_length=1, max_length=200)
    wait: bool = True
    requested_by: str = Field(default="", max_length=200)
    # Forge a scale model of the base instead (adapters/runs/rehearsal.py): capped steps,
    # stand-in corpora, refused stages passed over; the artifact can never be published.
    rehearsal: bool = False

    # May a stage take a completed stage's verified outputs by fingerprint (issue #14)?
    # false (`forge run --no-reuse`) computes every stage again.
    reuse: bool = True


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
    limit: StrictInt = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = None


class PublishArtifact(Frozen):
    """forge/publish: publish a sealed artifact (by artifact or run id) to a target."""

    id: str
    target: str = Field(pattern=PUBLISH_TARGET)
    force: bool = False
    reason: str = Field(default="", max_length=2000)


class LineageQuery(Frozen):
    """lineage/report: what led to an artifact, run or recipe."""

    id: str


class AuditEvents(Frozen):
    """audit/events: read back every stored event of both logs; list each damaged one."""


class AuditInFlight(Frozen):
    """audit/in-flight: runs not completed, imported alloys without recipe or runs."""


class AuditRecipes(Frozen):
    """audit/recipes: replay every recipe's events; compare with the view and runs' pins."""


class AuditCheckpoint(Frozen):
    """audit/checkpoint: sign a checkpoint of both event logs as they are now."""


class AuditCheckpoints(Frozen):
    """audit/checkpoints: recompute every signed checkpoint; name any rewrite."""


class ReplayQuery(Frozen):
    """audit/replay: rebuild a run's artifact from its events and compare."""

    run_id: str


class RenderCards(Frozen):
    """artifact/card: write README.md and MODEL_METHODOLOGY.md of an artifact into `out`."""

    id: str
    out: str = Field(min_length=1, max_length=4096)


class VerifyArtifact(Frozen):
    """artifact/verify: check alloyHash, weights, card and signature of an artifact (by
    artifact or run id) or of a published .alloy.json file."""

    subject: str = Field(min_length=1, max_length=4096)
    model_dir: str | None = Field(default=None, max_length=4096)
    # The GGUF tiers' own folder, when a publication put them in a repo of their own.
    gguf_dir: str | None = Field(default=None, max_length=4096)
    readme: str | None = Field(default=None, max_length=4096)
    trust: list[str] = Field(default_factory=list, max_length=100)
    # Without it an unsigned artifact says `signature: none` and `weights: not recorded`
    # and still verifies; with it, those absences are failures.
    require_signature: bool = False


class ImportAlloys(Frozen):
    """alloy/import: .alloy.json files (or directories of them) as recipes and runs."""

    paths: list[str] = Field(min_length=1, max_length=10_000)


class ExportAlloy(Frozen):
    """alloy/export: a recipe or artifact as .alloy.json; written to `out` when given."""

    id: str
    out: str | None = Field(default=None, max_length=4096)
