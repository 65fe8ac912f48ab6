"""A recipe's `publish` stages (and legacy `deliver` ones, migrated to `publish` on import).

They are not executor stages: what they publish is the sealed artifact, so they are carried
out once the run has completed, through the same path as `forge/publish`
(adapters/publishing/publish.py `publish_run`), which records `Published` or
`PublishFailed` on the run. A failed publication leaves the artifact sealed and the run
completed; the run's outcome lists each publish stage as published or failed, with why.

Where a stage publishes: its `target` URL; else `hf://{org}/{repoNameTemplate}` rendered from
the recipe; else (a migrated `deliver` names neither) the run's publishTarget.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog
from pydantic import ValidationError

from foundry.adapters.clock import utc_now
from foundry.domain import commands as c
from foundry.domain.errors import InvalidInputError, RunStateError
from foundry.domain.implied_steps import PUBLISH_TYPES
from foundry.domain.run_state import State

if TYPE_CHECKING:
    from foundry.adapters.publishing.ports import PublishServices
    from foundry.adapters.store.forge_runs import ForgeRuns

Outcome = dict[str, Any]
log = structlog.get_logger()


def render_publish_target(target: str | c.PublishTargetTemplate | None,
                          recipe: dict[str, Any]) -> str | None:
    """The URL a run publishes to: given as one, or `hf://{org}/{repoTemplate}` with the
    template's fields taken from the recipe and reduced to a hub repo name."""
    if not isinstance(target, c.PublishTargetTemplate):
        return target
    fields = {"base": _base_name(recipe), "domain": _domain(recipe),
              "name": str(recipe.get("name") or "model"), "version": str(recipe["version"])}
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", target.repo_template.format(**fields))
    name = name.strip("-._")[:96]
    if not name:
        raise InvalidInputError("publishTarget.repoTemplate",
                                f"renders to no usable repo name for {fields}")
    url = f"hf://{target.org}/{name}"
    return f"{url}?gguf={target.gguf}" if target.gguf else url


def _base_name(recipe: dict[str, Any]) -> str:
    """`Qwen/Qwen3.5-4B` -> `Qwen3.5-4B`; `./models/tiny-llama` -> `tiny-llama`."""
    base = str((recipe.get("source") or {}).get("baseModel") or "model")
    return PurePosixPath(base.split("://", 1)[-1].rstrip("/")).name or "model"


def _domain(recipe: dict[str, Any]) -> str:
    """The first train stage's `domain`, else the first tag, else `general`."""
    for stage in recipe.get("stages") or []:
        if stage.get("type") == "train" and stage.get("domain"):
            return str(stage["domain"])
    tags = recipe.get("tags") or []
    return str(tags[0]) if tags else "general"


def _stage_target(index: int, stage: dict[str, Any], recipe: dict[str, Any],
                  publish_target: str | None) -> str | None:
    if stage.get("target"):
        return str(stage["target"])
    if stage.get("org"):
        try:
            template = c.PublishTargetTemplate(
                org=stage["org"], repo_template=stage.get("repoNameTemplate")
                or "{base}-{domain}-forged")
        except ValidationError as e:
            raise InvalidInputError(f"stages.{index}", f"publish stage: {e.errors()[0]['msg']}"
                                    ) from None
        return render_publish_target(template, recipe)
    return publish_target


def stage_targets(recipe: dict[str, Any], publish_target: str | None
                  ) -> list[tuple[int, str | None]]:
    """(stage index, where it publishes, None when nothing says) of each publish stage."""
    return [(i, _stage_target(i, s, recipe, publish_target))
            for i, s in enumerate(recipe.get("stages") or []) if s.get("type") in PUBLISH_TYPES]


def check_stage_targets(recipe: dict[str, Any], publish_target: str | None) -> None:
    """Refuse, before a run is requested, a publish stage that names no usable target."""
    from foundry.adapters.publishing.publish import check_target

    for index, target in stage_targets(recipe, publish_target):
        if target is None:
            raise InvalidInputError(
                f"stages.{index}", "a publish stage that names neither target nor org "
                "publishes to the run's publishTarget, and none was given")
        try:
            check_target(target)
        except InvalidInputError as e:
            raise InvalidInputError(f"stages.{index}", f"publish target {target}: "
                                    f"{e}") from None


def stage_outcomes(state: State) -> list[Outcome]:
    """Each publish stage of the run: published (url), failed (why), or pending."""
    if state.get("imported") or not any(
            s.get("type") in PUBLISH_TYPES for s in state["recipe"].get("stages") or []):
        return []  # forged elsewhere, or nothing to publish: no stage of this run publishes
    published = {p["target"]: p for p in state.get("publications") or []}
    failed = {f["target"]: f for f in state.get("publishFailures") or []}
    outcomes: list[Outcome] = []
    for index, target in stage_targets(state["recipe"], state.get("publishTarget")):
        outcome: Outcome = {"index": index, "target": target}
        if target in published:
            outcome.update(status="published", url=published[target]["url"])
        elif target in failed:
            outcome.update(status="failed", error=failed[target]["message"],
                           note="the artifact stays sealed; forge/publish retries")
        else:
            outcome["status"] = "pending"
        outcomes.append(outcome)
    return outcomes


def publish_stages(services: PublishServices, run_id: UUID) -> list[Outcome]:
    """Publish a completed run to each publish stage's target not tried yet; the outcomes."""
    from foundry.adapters.publishing.hub import PublishError
    from foundry.adapters.publishing.publish import publish_run

    runs = services.runs
    state = runs.get_run(run_id).state
    if state["status"] != "completed" or state["recipe"].get("rehearsal"):
        return stage_outcomes(state)
    for outcome in stage_outcomes(state):
        target = outcome["target"]
        if outcome["status"] != "pending" or target is None:
            continue
        try:
            publish_run(services, run_id, target)
        except PublishError:
            continue  # publish_run recorded PublishFailed with the hub's answer
        except (RunStateError, InvalidInputError) as e:
            _record_refusal(runs, run_id, target, e)
        except Exception as e:  # a completed run never crashes on its publication
            log.exception("publish_stage_failed", target=target)
            _record_refusal(runs, run_id, target, e)
    return stage_outcomes(runs.get_run(run_id).state)


def _record_refusal(runs: ForgeRuns, run_id: UUID, target: str, error: Exception) -> None:
    """A publication refused before any upload (the gate failed, the license, the target) is
    recorded as failed too, so the run's events say why nothing was published."""
    error_type, message = type(error).__name__, str(error)
    runs.record(run_id, lambda r: r.record_publish_failure(
        target=target, error_type=error_type, message=message, request_id=None, status=None,
        at=utc_now()))
