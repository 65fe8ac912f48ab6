"""What publishing, import and export use of the system: a Protocol, so that this package
never imports the composition root (bootstrap.Services satisfies it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from foundry.adapters.settings import Settings
    from foundry.adapters.store.blobs import BlobStore
    from foundry.adapters.store.forge_runs import ForgeRuns
    from foundry.adapters.store.recipe_book import RecipeBook
    from foundry.projections.host import ProjectionHost


class PublishServices(Protocol):
    """The stores, the artifact view, the blob store and the settings read at open."""

    @property
    def settings(self) -> Settings: ...
    @property
    def recipes(self) -> RecipeBook: ...
    @property
    def runs(self) -> ForgeRuns: ...
    @property
    def blobs(self) -> BlobStore: ...
    @property
    def artifact_host(self) -> ProjectionHost: ...
    @property
    def artifact_view(self) -> Any: ...
