"""What a command handler may use: the services (a Protocol, so handlers never import the
composition root) and the per-call context (who asks, where progress goes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from foundry.adapters.runs.launch import RunDispatcher
    from foundry.adapters.settings import Settings
    from foundry.adapters.store.blobs import BlobStore
    from foundry.adapters.store.config import StoreConfig
    from foundry.adapters.store.forge_runs import ForgeRuns
    from foundry.adapters.store.recipe_book import RecipeBook
    from foundry.executors.registry import ExecutorRegistry
    from foundry.projections.host import ProjectionHost

ProgressListener = Callable[[dict[str, Any]], None]


def ignore_progress(_event: dict[str, Any]) -> None:
    """The listener of a caller that draws nothing."""


def isolated(listener: ProgressListener) -> ProgressListener:
    """`listener`, but one that cannot fail the run it watches: a display that breaks (a
    closed terminal, a bug in a caller's callback) is logged and the run goes on."""
    if listener is ignore_progress:
        return listener

    def safe(event: dict[str, Any]) -> None:
        try:
            listener(event)
        except Exception:
            import structlog

            structlog.get_logger().warning("progress_listener_failed", kind=event.get("kind"),
                                           exc_info=True)

    return safe


class CommandServices(Protocol):
    """The long-lived parts of the system a handler works with; built once by bootstrap."""

    @property
    def config(self) -> StoreConfig: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def recipes(self) -> RecipeBook: ...
    @property
    def runs(self) -> ForgeRuns: ...
    @property
    def recipe_host(self) -> ProjectionHost: ...
    @property
    def artifact_host(self) -> ProjectionHost: ...
    @property
    def recipe_view(self) -> Any:
        """The recipe DocumentView (SQLite or PostgreSQL, as the store is)."""
    @property
    def artifact_view(self) -> Any:
        """The artifact DocumentView (SQLite or PostgreSQL, as the store is)."""
    @property
    def state_dir(self) -> Path: ...
    @property
    def blobs(self) -> BlobStore: ...
    @property
    def registry(self) -> ExecutorRegistry: ...
    @property
    def launcher(self) -> RunDispatcher: ...


@dataclass(frozen=True)
class Call:
    """One call's context: what differs between two concurrent calls on one system."""

    progress: ProgressListener = field(default=ignore_progress)
    """Gets every stage event of a run this call executes or follows (the CLI's progress bar)."""
    principal: str = ""
    """Who asks: the OS user on the CLI, the authenticated client on HTTP; '' when unknown."""
