"""eval/show: the evaluation ledger of a stored artifact (by artifact or run id).

Each entry of results.benchmarks with how it was made (adapters/publishing/eval_ledger.py):
harness and version, data hash, problems, prompt template hash, sampling, seed, model hash
and format, device, wall time, samples file hash; plus every reason two scores of the
artifact are not comparable. Ids only: it never reads a path a caller names, so a read
token over HTTP cannot use it to read files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from foundry.adapters.commands.registry import CommandSpec
from foundry.adapters.commands.validation import parse_uuid
from foundry.adapters.store.run_lookup import run_of
from foundry.domain.values.base import Frozen

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices

Result = dict[str, Any]


class ShowEvaluation(Frozen):
    """eval/show: the ledger of every benchmark score of an artifact (artifact or run id)."""

    id: str = Field(min_length=1, max_length=64)


def show_evaluation(cmd: ShowEvaluation, services: CommandServices, _call: Call) -> Result:
    from foundry.adapters.publishing.eval_ledger import incomparable, ledger_rows
    from foundry.domain.artifact_builder import build_artifact

    run_id = run_of(services, parse_uuid(cmd.id))
    artifact = build_artifact(services.runs.get_run(run_id).state)
    return {"artifactId": artifact.get("id"), "runId": str(run_id),
            "benchmarks": ledger_rows(artifact), "notComparable": incomparable(artifact)}


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("eval/show", ShowEvaluation, show_evaluation, "read",
                "how each benchmark score of an artifact was made (its evaluation ledger)"),
)
