"""`foundry projections run`: keep every view caught up in a process of its own.

On PostgreSQL this uses the library's ProjectionRunner (LISTEN/NOTIFY subscription; each
event applied with its tracking position in one transaction, so a restart resumes exactly
where it stopped). SQLite has no subscriptions: the polling ProjectionHost does the same.

An event a view cannot apply is set aside (foundry.projections.quarantine), not allowed to stop
the view: `process_event` sets aside what the view's write refuses, and an event the library's
runner cannot even decode (it decodes before `process_event`) stops that runner with the
event's error; the host's catch-up then sets it aside and the runners start again after it.
A failure of the store itself still stops `projections run`, as before.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection, ProjectionRunner

from foundry.projections import quarantine as q
from foundry.projections.artifacts.view import TOPICS as ARTIFACT_TOPICS
from foundry.projections.artifacts.view import ArtifactViewPostgres
from foundry.projections.recipes.fold import TOPICS as RECIPE_TOPICS
from foundry.projections.recipes.view import RecipeViewPostgres


def _apply(view: Any, domain_event: Any, tracking: Tracking) -> None:
    try:
        view.apply_batch(tracking.application_name, [(domain_event, tracking.notification_id)])
    except Exception as error:
        if not q.is_record_fault(error):
            raise
        view.quarantine(tracking.application_name, [q.of_event(
            view.schema.key_of, domain_event, tracking.notification_id, error)])


class RecipeProjection(Projection[RecipeViewPostgres]):
    name = "recipeview"
    topics = RECIPE_TOPICS

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        _apply(self.view, domain_event, tracking)


class ArtifactProjection(Projection[ArtifactViewPostgres]):
    name = "artifactview"
    topics = ARTIFACT_TOPICS

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        _apply(self.view, domain_event, tracking)


def run_projections(foundry: Any, *, stop_after: float | None = None) -> None:
    if foundry.config.kind == "sqlite":
        deadline = None if stop_after is None else time.monotonic() + stop_after
        while deadline is None or time.monotonic() < deadline:
            for host in foundry.hosts().values():
                host.catch_up()
            time.sleep(0.5)
        return
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while True:
        try:
            _run_postgres(foundry, deadline=deadline)
            return
        except Exception as error:
            if not q.is_record_fault(error):
                raise
            # An event the runner could not decode: catch-up sets it aside (and anything else
            # it cannot apply), then the runners resume after it. Catch-up that moves nothing
            # means the error is not an event's: raised rather than looping.
            moved = [host.catch_up() for host in foundry.hosts().values()]
            if not any(m.quarantined for m in moved):
                raise


def _run_postgres(foundry: Any, *, deadline: float | None) -> None:
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
        while deadline is None or time.monotonic() < deadline:
            for runner in runners:
                # Returns after the timeout; re-raises the error that stopped the runner's
                # thread (the library's runner stops at its first error: we do not hide it).
                runner.run_forever(timeout=0.25)
