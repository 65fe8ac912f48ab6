"""Domain errors. One root, context kept as attributes, messages that say what to do."""

from __future__ import annotations


class FoundryError(Exception):
    """Root of every error this project raises on purpose."""

    code = "foundry_error"


class InvalidInputError(FoundryError, ValueError):
    """Raised when a command's input breaks a rule; names the field path and the rule."""

    code = "invalid_input"

    def __init__(self, field: str, rule: str, *, details: list[dict[str, str]] | None = None):
        self.field, self.rule = field, rule
        self.details = details or [{"field": field, "rule": rule}]
        super().__init__(f"{field}: {rule}")


class RecipeNotFoundError(FoundryError, LookupError):
    """Raised when no recipe has the given id."""

    code = "not_found"

    def __init__(self, recipe_id: str):
        self.recipe_id = recipe_id
        super().__init__(f"recipe {recipe_id!r} not found")


class RevisionConflictError(FoundryError):
    """Raised when a write carries an expectedRevision that is no longer current."""

    code = "revision_conflict"

    def __init__(self, entity_id: str, expected: int, current: int):
        self.entity_id, self.expected, self.current = entity_id, expected, current
        super().__init__(
            f"{entity_id}: expectedRevision {expected} is stale, the current revision is "
            f"{current}; read it again and reapply your change"
        )


class PinnedVersionError(FoundryError):
    """Raised when an edit keeps a recipe version that a run has already pinned."""

    code = "version_pinned"

    def __init__(self, recipe_id: str, version: str, attempted: str):
        self.recipe_id, self.version, self.attempted = recipe_id, version, attempted
        super().__init__(
            f"version: recipe {recipe_id} version {version} is pinned by a run; an edit must "
            f"raise version to a strictly greater semver (got {attempted})"
        )


class RecipeArchivedError(FoundryError):
    """Raised when a write targets an archived recipe."""

    code = "archived"

    def __init__(self, recipe_id: str):
        self.recipe_id = recipe_id
        super().__init__(f"recipe {recipe_id} is archived; fork it to make a new one")


class AlreadyExistsError(FoundryError):
    """Raised when data/create names an id that is already taken."""

    code = "already_exists"

    def __init__(self, entity_id: str):
        self.entity_id = entity_id
        super().__init__(f"id: {entity_id!r} already exists; use data/update or data/upsert")


class RunNotFoundError(FoundryError, LookupError):
    """Raised when no run has the given id."""

    code = "not_found"

    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"run {run_id!r} not found")


class RunStateError(FoundryError):
    """Raised when a run event is not legal in the run's current state."""

    code = "illegal_transition"

    def __init__(self, run_id: str, message: str):
        self.run_id = run_id
        super().__init__(f"run {run_id}: {message}")


class StageNotStartedError(RunStateError):
    """Raised when a stage reports progress, completion or failure without having started."""


class StageAlreadyCompletedError(RunStateError):
    """Raised when a stage completes (or starts) a second time."""


class RunEndedError(RunStateError):
    """Raised when anything happens to a run that has completed, failed or been cancelled."""

    code = "run_ended"


class NameTakenError(InvalidInputError):
    """Raised when a recipe would take a name that another live recipe holds."""

    code = "name_taken"

    def __init__(self, name: str, holder_id: str, *, field: str = "data.name"):
        self.name, self.holder_id = name, holder_id
        super().__init__(
            field, f"{name!r} is the name of the live recipe {holder_id}; names are unique "
            "among live recipes: choose another, or delete (archive) that recipe first",
            details=[{"field": field, "rule": "unique among live recipes",
                      "recipeId": holder_id}])
        # In the envelope next to `errors`: which recipe holds the name.
        self.envelope_fields = {"conflictingRecipeId": holder_id}
