"""A run from what a caller may hold: the run's own id or its artifact's id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from foundry.domain.errors import InvalidInputError

if TYPE_CHECKING:
    from foundry.adapters.store.forge_runs import ForgeRuns
    from foundry.projections.host import ProjectionHost


class RunsAndArtifacts(Protocol):
    @property
    def runs(self) -> ForgeRuns: ...
    @property
    def artifact_host(self) -> ProjectionHost: ...
    @property
    def artifact_view(self) -> Any: ...


def run_of(services: RunsAndArtifacts, some_id: UUID) -> UUID:
    """A run id from a run id or an artifact id; anything else is the caller's error."""
    if some_id in services.runs.repository:
        return some_id
    services.artifact_host.catch_up()
    row = services.artifact_view.get(str(some_id))
    if row is None:
        raise InvalidInputError("id", f"{some_id} is no run or artifact in this store")
    return UUID(row["run_id"])
