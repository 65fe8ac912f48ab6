"""forge/* handlers: request, execute, inspect, cancel and resume runs."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.commands.bus import EXTRA_HANDLERS
from foundry.adapters.runs.orchestrator import utc_now
from foundry.adapters.runs.progress import read_beat
from foundry.adapters.runs.launch import waiting_reason
from foundry.adapters.store.forge_runs import run_id_for
from foundry.adapters.commands.validation import parse_uuid, validate_model
from foundry.domain import commands as c
from foundry.domain.artifact_builder import artifact_id
from foundry.domain.errors import InvalidInputError, RunStateError
from foundry.domain.values import ForgeRecipe

if TYPE_CHECKING:
    from foundry.adapters.bootstrap import Foundry

Result = dict[str, Any]
# A heartbeat older than this, from an owner we cannot check directly, means a dead owner.
STALE_AFTER_SECONDS = 120.0


def forge_run(foundry: Foundry, params: dict[str, Any]) -> Result:
    cmd = validate_model(c.RunRecipe, params)
    recipe_id = parse_uuid(cmd.recipe_id, "recipeId")
    run_id = run_id_for(cmd.command_id)
    if cmd.command_id and _exists(foundry, run_id):
        # The same command again: the first run, resumed if it was interrupted.
        return _go(foundry, run_id, cmd.wait, repeated=True)
    recipe, revision = _pinnable_recipe(foundry, recipe_id, cmd.recipe_version)
    _check_executable(foundry, recipe)
    pinned, recipe_hash = foundry.recipes.pin_recipe_version(recipe_id, run_id=str(run_id)) \
        if revision is None else (None, None)
    if pinned is not None:
        recipe, revision = pinned.data, pinned.revision
    else:
        from foundry.domain.hashing import content_hash

        recipe_hash = content_hash({k: v for k, v in recipe.items() if k != "id"})
    run, _ = foundry.runs.request_run(
        run_id, recipe_id=str(recipe_id), recipe_version=recipe["version"],
        recipe_revision=revision, recipe_hash=recipe_hash, recipe=recipe,
        hardware_node=cmd.hardware_node, publish_target=cmd.publish_target,
        requested_by=cmd.requested_by, command_id=cmd.command_id, at=utc_now(),
    )
    return _go(foundry, run.id, cmd.wait, repeated=False)


def _exists(foundry: Foundry, run_id: UUID) -> bool:
    return run_id in foundry.runs.repository


def _pinnable_recipe(foundry: Foundry, recipe_id: UUID, version: str | None
                     ) -> tuple[dict[str, Any], int | None]:
    """The recipe to run. (data, None) for the current version, which gets pinned; (data,
    revision) for an older version, read as it stood at its last revision."""
    recipe = foundry.recipes.get_recipe(recipe_id)
    if version is None or version == recipe.recipe_version:
        return recipe.data, None
    for revision in range(recipe.revision, 0, -1):
        old = foundry.recipes.get_recipe(recipe_id, version=revision)
        if old.recipe_version == version:
            return old.data, revision
    raise InvalidInputError("recipeVersion", f"recipe {recipe_id} never had version {version}")


def _check_executable(foundry: Foundry, recipe: dict[str, Any]) -> None:
    stages = recipe.get("stages") or []
    if not stages:
        raise InvalidInputError("stages", "the recipe has no stages: nothing to forge")
    registry = foundry.registry
    missing = registry.unexecutable(s["type"] for s in stages)
    if missing:
        raise InvalidInputError(
            "stages", f"not executable on this foundry: {', '.join(missing)} (executable: "
            f"{', '.join(sorted(registry.executable_types()))})")
    ForgeRecipe.model_validate(recipe)  # stored data was validated; this guards old events
    names = {b["name"] for s in stages if s["type"] == "eval" for b in s.get("benchmarks", [])}
    names |= {b["name"] for b in recipe.get("evaluationBenchmarks") or []}
    unknown = sorted(names - registry.known_benchmarks)
    if unknown:
        raise InvalidInputError(
            "benchmarks", f"unknown benchmark(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(registry.known_benchmarks))}")


def _go(foundry: Foundry, run_id: UUID, wait: bool, *, repeated: bool) -> Result:
    dispatcher = foundry.run_dispatcher
    summary = _summary(foundry, run_id)
    owner = summary["owner"]
    if summary["status"] == "running" and owner and owner.get("alive"):
        # A live worker holds the run: a second one would race it, attempt against attempt.
        if not repeated:
            raise RunStateError(str(run_id), f"cannot resume: worker pid {owner['pid']} on "
                                f"{owner['host']} is still running it")
        return {**summary, "repeated": True, "detached": True, "workerPid": owner["pid"],
                "dispatcher": dispatcher.name}
    extra = dispatcher.dispatch(foundry, run_id, wait=wait)
    result = {**_summary(foundry, run_id), "repeated": repeated, "dispatcher": dispatcher.name,
              **extra}
    if wait:
        result.update(_publish_after_run(foundry, run_id))
    return result


def _publish_after_run(foundry: Foundry, run_id: UUID) -> Result:
    """Publish to the run's publishTarget once it completed. A failure is recorded on the
    run and reported here; the run stays sealed and `forge/publish` can retry."""
    run = foundry.runs.get_run(run_id)
    target = run.state["publishTarget"]
    if not target or run.status != "completed" or run.state.get("publications"):
        return {}
    from foundry.adapters.publishing.hub import PublishError
    from foundry.adapters.publishing.publish import publish_run

    try:
        return {"publication": publish_run(foundry, run_id, target)}
    except (PublishError, RunStateError) as e:
        return {"publishError": str(e)}


def forge_publish(foundry: Foundry, params: dict[str, Any]) -> Result:
    from foundry.adapters.publishing.publish import publish_run

    cmd = validate_model(c.PublishArtifact, params)
    run_id = _run_of(foundry, parse_uuid(cmd.id))
    return publish_run(foundry, run_id, cmd.target, force=cmd.force, reason=cmd.reason)


def _run_of(foundry: Foundry, some_id: UUID) -> UUID:
    """A run id from a run id or an artifact id."""
    if some_id in foundry.runs.repository:
        return some_id
    foundry.artifact_host.catch_up()
    row = foundry.artifact_view.get(str(some_id))
    if row is None:
        raise InvalidInputError("id", f"{some_id} is no run or artifact in this store")
    return UUID(row["run_id"])


def forge_status(foundry: Foundry, params: dict[str, Any]) -> Result:
    cmd = validate_model(c.RunRef, params)
    return _summary(foundry, parse_uuid(cmd.run_id, "runId"))


def _summary(foundry: Foundry, run_id: UUID) -> Result:
    run = foundry.runs.get_run(run_id)
    s = run.state
    stages = sorted(s["stages"].values(), key=lambda r: (r["cycle"], r["index"]))
    return {
        "runId": str(run_id), "artifactId": artifact_id(str(run_id)), "status": run.status,
        "recipeId": s["recipeId"], "recipeVersion": s["recipeVersion"],
        "hardwareNode": s["hardwareNode"], "alloyHash": s["alloyHash"], "gate": s["gate"],
        "failure": s["failure"], "cancellation": s["cancellation"],
        "stages": [{k: r.get(k) for k in ("cycle", "index", "type", "status", "inputHash",
                                          "outputHash", "seconds", "progress", "error")}
                   for r in stages],
        "owner": _owner(foundry, run_id, s),
        "dispatches": len(s.get("dispatches", [])),
        **({"waiting": waiting_reason(s)} if s["status"] == "requested" else {}),
    }



def _owner(foundry: Foundry, run_id: UUID, state: dict[str, Any]) -> Result | None:
    """Who holds the run, and whether it is alive: a run stuck with a dead owner shows here."""
    if not state["attempts"]:
        return None
    last = state["attempts"][-1]
    owner: Result = {"host": last["workerHost"], "pid": last["pid"], "attempt": last["attempt"]}
    if state["status"] != "running":
        return owner
    beat = read_beat(foundry.state_dir / "heartbeats" / str(run_id))
    age = None if beat is None else round(time.time() - float(beat["at"]), 1)
    if last["workerHost"] == socket.gethostname():
        alive = _pid_alive(int(last["pid"]))
    else:
        alive = age is not None and age < STALE_AFTER_SECONDS
    owner.update(alive=alive, heartbeatAgeSeconds=age, stuck=not alive)
    if not alive:
        owner["hint"] = f"the owner is gone: run forge/resume with runId {run_id}"
    return owner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def forge_cancel(foundry: Foundry, params: dict[str, Any]) -> Result:
    cmd = validate_model(c.CancelRun, params)
    run_id = parse_uuid(cmd.run_id, "runId")
    foundry.runs.record(run_id, lambda r: r.cancel(by=cmd.by, reason=cmd.reason, at=utc_now()))
    return _summary(foundry, run_id)


def forge_resume(foundry: Foundry, params: dict[str, Any]) -> Result:
    cmd = validate_model(c.ResumeRun, params)
    run_id = parse_uuid(cmd.run_id, "runId")
    run = foundry.runs.get_run(run_id)
    if run.ended:
        raise RunStateError(str(run_id), f"cannot resume: the run is {run.status}")
    return _go(foundry, run_id, cmd.wait, repeated=False)


def forge_list_runs(foundry: Foundry, params: dict[str, Any]) -> Result:
    from foundry.adapters.commands.data import data_list

    cmd = validate_model(c.ListRuns, params)
    listed = data_list(foundry, {**cmd.model_dump(by_alias=True, exclude_none=True),
                                 "collection": c.ARTIFACTS})
    runs = [{"runId": a["provenance"]["runId"], "artifactId": a["id"], "status": a["status"],
             "recipeId": a["recipeId"], "recipeVersion": a["recipeVersion"],
             "hardwareNode": a["hardwareNode"], "forgedAt": a.get("forgedAt"),
             "alloyHash": a.get("alloyHash")} for a in listed["items"]]
    return {"runs": runs, "count": len(runs), "nextCursor": listed["nextCursor"]}


EXTRA_HANDLERS.update({
    "forge/run": forge_run,
    "forge/status": forge_status,
    "forge/cancel": forge_cancel,
    "forge/resume": forge_resume,
    "forge/list-runs": forge_list_runs,
    "forge/publish": forge_publish,
})
