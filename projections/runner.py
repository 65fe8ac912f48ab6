"""`foundry projections run`: keep every view caught up in a process of its own.

On PostgreSQL this uses the library's ProjectionRunner (LISTEN/NOTIFY subscription; each
event applied with its tracking position in one transaction, so a restart resumes exactly
where it stopped). SQLite has no subscriptions: the polling ProjectionHost does the same.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection, ProjectionRunner

from foundry.projections.artifacts.view import TOPICS as ARTIFACT_TOPICS
from foundry.projections.artifacts.view import ArtifactViewPostgres
from foundry.projections.recipes.fold import TOPICS as RECIPE_TOPICS
from foundry.projections.recipes.view import RecipeViewPostgres


class RecipeProjection(Projection[RecipeViewPostgres]):
    name = "recipeview"
    topics = RECIPE_TOPICS

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.apply_batch(tracking.application_name,
                              [(domain_event, tracking.notification_id)])


class ArtifactProjection(Projection[ArtifactViewPostgres]):
    name = "artifactview"
    topics = ARTIFACT_TOPICS

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.apply_batch(tracking.application_name,
                              [(domain_event, tracking.notification_id)])


def run_projections(foundry: Any, *, stop_after: float | None = None) -> None:
    if foundry.config.kind == "sqlite":
        deadline = None if stop_after is None else time.monotonic() + stop_after
        while deadline is None or time.monotonic() < deadline:
            for host in foundry.hosts().values():
                host.catch_up()
            time.sleep(0.5)
        return
    # The application classes come from the open Foundry (the composition root) rather than by
    # import: views know events, never the store's applications (the layers contract).
    with contextlib.ExitStack() as stack:
        runners = [
            stack.enter_context(ProjectionRunner(
                application_class=type(app), projection_class=projection, view_class=view,
                env=foundry.app_env(purpose)))
            for app, projection, view, purpose in (
                (foundry.recipes, RecipeProjection, RecipeViewPostgres, ""),
                (foundry.runs, ArtifactProjection, ArtifactViewPostgres, "runs"),
            )
        ]
        deadline = None if stop_after is None else time.monotonic() + stop_after
        while deadline is None or time.monotonic() < deadline:
            for runner in runners:
                # Returns after the timeout; re-raises the error that stopped the runner's
                # thread (the library's runner stops at its first error: we do not hide it).
                runner.run_forever(timeout=0.25)
