"""The ForgeRuns application: run progress has its own event store and its own write lock,
so a long forge never queues behind recipe edits (and the reverse)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper

from foundry.adapters.store.damaged import DamageNamingMapper
from foundry.domain.errors import RunNotFoundError
from foundry.domain.forge_run import ForgeRun


def run_id_for(command_id: str | None) -> UUID:
    """A run requested with a command id gets a deterministic id: a repeat finds it."""
    return uuid5(NAMESPACE_URL, f"foundry/run-command/{command_id}") if command_id else uuid4()


class ForgeRuns(Application[UUID]):
    """Forge runs: request, then one command per step, each saved as it happens."""

    name = "ForgeRuns"
    snapshotting_intervals = {ForgeRun: 200}

    def construct_mapper(self) -> Mapper[UUID]:
        # A stored event that cannot be decoded is named (adapters/store/damaged.py).
        return self.factory.mapper(transcoder=self.construct_transcoder(),
                                   mapper_class=DamageNamingMapper)

    def get_run(self, run_id: UUID) -> ForgeRun:
        try:
            run: ForgeRun = self.repository.get(run_id)
        except AggregateNotFoundError:
            raise RunNotFoundError(str(run_id)) from None
        return run

    def request_run(self, run_id: UUID, **fields: Any) -> tuple[ForgeRun, bool]:
        """Record the request; (run, False) if a run with this id exists already."""
        run = ForgeRun.request(id=run_id, **fields)
        try:
            self.save(run)
        except IntegrityError:
            return self.get_run(run_id), False
        return run, True

    def record(self, run_id: UUID, step: Callable[[ForgeRun], Any]) -> Any:
        """Load, apply `step` (an aggregate command), save. Retried if another process (a
        cancel, say) saved in between: the step's guards then judge the newer state."""
        for _ in range(20):
            run = self.get_run(run_id)
            result = step(run)
            try:
                self.save(run)
            except IntegrityError:
                continue
            return result
        msg = f"run {run_id}: could not save after 20 concurrent retries"
        raise RuntimeError(msg)
