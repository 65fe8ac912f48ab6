"""forge/* handlers: request, execute, inspect, cancel and resume runs."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.clock import utc_now
from foundry.adapters.commands.data import data_list
from foundry.adapters.commands.registry import CommandSpec
from foundry.adapters.commands.validation import parse_uuid
from foundry.adapters.errors import CommandConflictError
from foundry.adapters.runs.launch import waiting_reason
from foundry.adapters.runs.progress import read_beat
from foundry.adapters.runs.publish_stages import (
    check_stage_targets,
    publish_stages,
    render_publish_target,
    stage_outcomes,
    stage_targets,
)
from foundry.adapters.store.forge_runs import run_id_for
from foundry.adapters.store.run_lookup import run_of
from foundry.domain import commands as c
from foundry.domain.artifact_builder import artifact_id
from foundry.domain.errors import InvalidInputError, RunStateError
from foundry.domain.implied_steps import PUBLISH_TYPES, implied_steps
from foundry.domain.run_state import State
from foundry.domain.values import ForgeRecipe

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices
    from foundry.executors.registry import ExecutorRegistry

Result = dict[str, Any]
# A heartbeat older than this, from an owner we cannot check directly, means a dead owner.
STALE_AFTER_SECONDS = 120.0
REHEARSAL_NODE = "any"  # where a rehearsal runs: it forges a scale model, any node will do


def forge_run(cmd: c.RunRecipe, services: CommandServices, call: Call) -> Result:
    recipe_id = parse_uuid(cmd.recipe_id, "recipeId")
    run_id = run_id_for(cmd.command_id)
    if cmd.command_id and _exists(services, run_id):
        # The same command again: the first run, resumed if it was interrupted. The same
        # commandId with other params is a different command, never silently the first one.
        _check_same_request(services, run_id, cmd, recipe_id)
        return _go(services, run_id, cmd.wait, call, repeated=True)
    recipe, revision = _pinnable_recipe(services, recipe_id, cmd.recipe_version)
    if cmd.rehearsal:
        return _rehearse(services, cmd, call, run_id, recipe_id, recipe, revision)
    _check_executable(services, recipe)
    check_node(services, cmd.hardware_node)
    target = render_publish_target(cmd.publish_target, recipe)
    check_stage_targets(recipe, target)  # each publish stage has somewhere to publish
    pinned, recipe_hash = services.recipes.pin_recipe_version(recipe_id, run_id=str(run_id)) \
        if revision is None else (None, None)
    if pinned is not None:
        recipe, revision = pinned.data, pinned.revision
    else:
        from foundry.domain.hashing import content_hash

        recipe_hash = content_hash({k: v for k, v in recipe.items() if k != "id"})
    run, _ = services.runs.request_run(
        run_id, recipe_id=str(recipe_id), recipe_version=recipe["version"],
        recipe_revision=revision, recipe_hash=recipe_hash, recipe=recipe,
        hardware_node=cmd.hardware_node, publish_target=target,
        requested_by=cmd.requested_by or call.principal, command_id=cmd.command_id,
        at=utc_now(), reuse=cmd.reuse,
    )
    return _go(services, run.id, cmd.wait, call, repeated=False)


def _rehearse(services: CommandServices, cmd: c.RunRecipe, call: Call, run_id: UUID,
              recipe_id: UUID, recipe: dict[str, Any], revision: int | None) -> Result:
    """A run of the recipe's scale-model rehearsal (adapters/runs/rehearsal.py). The recipe
    version is not pinned: a rehearsal is a trial, not a release of that version."""
    from foundry.adapters.runs.rehearsal import NEVER_PUBLISHED, rehearsal_recipe
    from foundry.domain.hashing import content_hash

    if cmd.publish_target is not None:
        raise InvalidInputError("publishTarget", NEVER_PUBLISHED)
    architecture = str((recipe.get("source") or {}).get("architecture") or "")
    problem = services.registry.architecture_problem(architecture)
    if problem:
        raise InvalidInputError("source.architecture", problem)
    rehearsed = rehearsal_recipe(recipe, services.registry, services.state_dir / "rehearsal",
                                 hardware_node=cmd.hardware_node)
    ForgeRecipe.model_validate(rehearsed)
    if revision is None:
        revision = services.recipes.get_recipe(recipe_id).revision
    run, _ = services.runs.request_run(
        run_id, recipe_id=str(recipe_id), recipe_version=recipe["version"],
        recipe_revision=revision,
        recipe_hash=content_hash({k: v for k, v in rehearsed.items() if k != "id"}),
        # Any node can forge a scale model; the node asked for is what the projection
        # compares the full-size memory with (rehearsal.projection.memory.node).
        recipe=rehearsed, hardware_node=REHEARSAL_NODE, publish_target=None,
        requested_by=cmd.requested_by or call.principal, command_id=cmd.command_id,
        at=utc_now(),
    )
    result = _go(services, run.id, cmd.wait, call, repeated=False)
    return {**result, "rehearsal": rehearsed["rehearsal"]}


def _check_same_request(services: CommandServices, run_id: UUID, cmd: c.RunRecipe,
                        recipe_id: UUID) -> None:
    """A repeated commandId must name the same recipe, node and (if given) version."""
    state = services.runs.get_run(run_id).state
    first = {"recipeId": state["recipeId"], "hardwareNode": state["hardwareNode"]}
    again = {"recipeId": str(recipe_id),
             "hardwareNode": REHEARSAL_NODE if cmd.rehearsal else cmd.hardware_node}
    if cmd.recipe_version is not None:
        first["recipeVersion"], again["recipeVersion"] = state["recipeVersion"], cmd.recipe_version
    if first != again:
        raise CommandConflictError(str(cmd.command_id), f"forge/run (run {run_id})")


def _exists(services: CommandServices, run_id: UUID) -> bool:
    return run_id in services.runs.repository


def _pinnable_recipe(services: CommandServices, recipe_id: UUID, version: str | None
                     ) -> tuple[dict[str, Any], int | None]:
    """The recipe to run. (data, None) for the current version, which gets pinned; (data,
    revision) for an older version, read as it stood at its last revision."""
    recipe = services.recipes.get_recipe(recipe_id)
    if version is None or version == recipe.recipe_version:
        return recipe.data, None
    for revision in range(recipe.revision, 0, -1):
        old = services.recipes.get_recipe(recipe_id, version=revision)
        if old.recipe_version == version:
            return old.data, revision
    raise InvalidInputError("recipeVersion", f"recipe {recipe_id} never had version {version}")


def _check_executable(services: CommandServices, recipe: dict[str, Any]) -> None:
    stages = recipe.get("stages") or []
    if not stages:
        raise InvalidInputError("stages", "the recipe has no stages: nothing to forge")
    registry = services.registry
    # Publish stages are carried out by the run itself after the seal; the steps the
    # recipe's quantTiers and evaluationBenchmarks imply need executors like any stage.
    steps = [s for s in stages if s["type"] not in PUBLISH_TYPES] + implied_steps(recipe)
    missing = registry.unexecutable(s["type"] for s in steps)
    if missing:
        raise InvalidInputError(
            "stages", f"not executable on this foundry: "
            f"{', '.join(map(registry.why_unexecutable, missing))} (executable: "
            f"{', '.join(sorted(registry.executable_types()))})")
    architecture = str((recipe.get("source") or {}).get("architecture") or "")
    problem = registry.architecture_problem(architecture)
    if problem:
        raise InvalidInputError("source.architecture", problem)
    ForgeRecipe.model_validate(recipe)  # stored data was validated; this guards old events
    entries = [b for s in stages if s["type"] == "eval" for b in s.get("benchmarks", [])]
    entries += list(recipe.get("evaluationBenchmarks") or [])
    _check_benchmarks(entries, registry)
    _check_gguf_tiers(recipe, registry)
    unproducible = registry.unproducible_tiers(recipe.get("quantTiers"))
    if unproducible:
        raise InvalidInputError(
            "quantTiers", f"cannot be produced on this foundry: {'; '.join(unproducible)}")


def _check_benchmarks(entries: list[dict[str, Any]], registry: ExecutorRegistry) -> None:
    """Every benchmark is one eval knows, or one it runs on a local `dataFile` and the entry
    names one (whether that file is there is checked where the stage runs: on its worker)."""
    from foundry.executors.registry import names_data_file

    known, on_file = registry.known_benchmarks, registry.data_file_benchmarks
    unknown = sorted({b["name"] for b in entries} - known - on_file)
    if unknown:
        raise InvalidInputError(
            "benchmarks", f"unknown benchmark(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known))}"
            + (f"; with a local dataFile: {', '.join(sorted(on_file))}" if on_file else ""))
    without = sorted({b["name"] for b in entries
                      if b["name"] in on_file and b["name"] not in known
                      and not names_data_file(b)})
    if without:
        raise InvalidInputError(
            "benchmarks", f"{', '.join(without)}: no data set for it is installed here; give "
            f"the entry a dataFile (a local JSON Lines file, docs/evaluation.md)")


def _check_gguf_tiers(recipe: dict[str, Any], registry: ExecutorRegistry) -> None:
    """A benchmark entry naming `gguf` scores that tier of this run: some quant step before
    its eval step must write it, or the run would fail there, maybe hours in. Steps run in
    the recipe's order, the implied ones after (domain/implied_steps.py)."""
    own = [(f"stages[{i}]", s) for i, s in enumerate(recipe.get("stages") or [])
           if s.get("type") not in PUBLISH_TYPES]
    implied = [(f"{s.get('impliedBy')} (implied {s['type']} step)", s)
               for s in implied_steps(recipe)]
    written: set[str] = set()
    for where, step in own + implied:
        if step.get("type") == "quant":
            tiers = registry.produced_tiers(step, recipe)
            if tiers is None:  # this worker's quant cannot say: the stage checks it
                return
            written |= tiers
        elif step.get("type") == "eval":
            for b in step.get("benchmarks") or []:
                tier = b.get("gguf") if isinstance(b, dict) else None
                if tier is not None and b.get("name") != "humaneval":
                    raise InvalidInputError(
                        "benchmarks", f"{where}: {b.get('name')} gguf: only humaneval scores "
                        f"a GGUF tier (through llama.cpp); the others run on the model itself")
                if isinstance(tier, str) and tier.strip().upper() not in written:
                    raise InvalidInputError(
                        "benchmarks", f"{where}: {b.get('name')} gguf {tier!r}: no quant step "
                        f"before this eval writes that tier (tiers written before it: "
                        f"{', '.join(sorted(written)) or 'none'}); add it to a quant stage's "
                        f"quantTypes or to quantTiers, or move the eval after the quant stage")


def check_node(services: CommandServices, hardware_node: str) -> None:
    """In-process execution runs here: a hardwareNode of another class or site is refused
    before anything is recorded, never executed here under a name it is not. (The Ray
    dispatcher instead leaves the run requested until a worker of that class takes it.)"""
    if services.launcher.name != "in-process":
        return
    from foundry.adapters.runs.node_identity import ENV_NODE_CLASS, local_node

    settings = services.settings
    node = local_node(services.registry.device, settings.node_class, settings.node_site)
    why = node.mismatch(hardware_node)
    if why:
        raise InvalidInputError(
            "hardwareNode", f"{hardware_node}: this foundry executes in-process on {node} "
            f"and {why}; ask for {node.node_class}@local or any, run it where that hardware "
            f"is (a worker started with --class, and the ray dispatcher), or configure this "
            f"node's class ({ENV_NODE_CLASS}) if it is that hardware")


def _go(services: CommandServices, run_id: UUID, wait: bool, call: Call, *,
        repeated: bool) -> Result:
    dispatcher = services.launcher
    summary = _summary(services, run_id)
    owner = summary["owner"]
    if summary["status"] == "running" and owner and owner.get("alive"):
        # A live worker holds the run: a second one would race it, attempt against attempt.
        if not repeated:
            raise RunStateError(str(run_id), f"cannot resume: worker pid {owner['pid']} on "
                                f"{owner['host']} is still running it")
        return {**summary, "repeated": True, "detached": True, "workerPid": owner["pid"],
                "dispatcher": dispatcher.name}
    extra = dispatcher.dispatch(services, run_id, wait=wait, progress=call.progress)
    result = {**_summary(services, run_id), "repeated": repeated, "dispatcher": dispatcher.name,
              **extra}
    if wait:
        result.update(_publish_after_run(services, run_id))
    return result


def _publish_after_run(services: CommandServices, run_id: UUID) -> Result:
    """Publish to the run's publishTarget once it completed. A failure is recorded on the
    run and reported here; the run stays sealed and `forge/publish` can retry."""
    publish_stages(services, run_id)  # any the worker left pending (publish_stages.py)
    run = services.runs.get_run(run_id)
    target = run.state["publishTarget"]
    if {t for _, t in stage_targets(run.state["recipe"], target)} & {target}:
        return {}  # a publish stage of the recipe published there
    if not target or run.status != "completed" or run.state.get("publications"):
        return {}
    from foundry.adapters.publishing.hub import PublishError
    from foundry.adapters.publishing.publish import publish_run

    try:
        return {"publication": publish_run(services, run_id, target)}
    except (PublishError, RunStateError) as e:
        return {"publishError": str(e)}


def forge_publish(cmd: c.PublishArtifact, services: CommandServices, _call: Call) -> Result:
    from foundry.adapters.publishing.publish import publish_run

    run_id = run_of(services, parse_uuid(cmd.id))
    return publish_run(services, run_id, cmd.target, force=cmd.force, reason=cmd.reason)


def forge_status(cmd: c.RunRef, services: CommandServices, _call: Call) -> Result:
    return _summary(services, parse_uuid(cmd.run_id, "runId"))


def _summary(services: CommandServices, run_id: UUID) -> Result:
    run = services.runs.get_run(run_id)
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
        "owner": _owner(services, run_id, s),
        "dispatches": len(s.get("dispatches", [])),
        **({"waiting": waiting_reason(s)} if s["status"] == "requested" else {}),
        **({"rehearsal": True} if s["recipe"].get("rehearsal") else {}),
        **({"publishStages": published} if (published := stage_outcomes(s)) else {}),
    }



def _owner(services: CommandServices, run_id: UUID, state: State) -> Result | None:
    """Who holds the run, and whether it is alive: a run stuck with a dead owner shows here."""
    if not state["attempts"]:
        return None
    last = state["attempts"][-1]
    owner: Result = {"host": last["workerHost"], "pid": last["pid"], "attempt": last["attempt"]}
    if state["status"] != "running":
        return owner
    beat = read_beat(services.state_dir / "heartbeats" / str(run_id))
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


def forge_cancel(cmd: c.CancelRun, services: CommandServices, _call: Call) -> Result:
    run_id = parse_uuid(cmd.run_id, "runId")
    services.runs.record(run_id, lambda r: r.cancel(by=cmd.by, reason=cmd.reason, at=utc_now()))
    return _summary(services, run_id)


def forge_resume(cmd: c.ResumeRun, services: CommandServices, call: Call) -> Result:
    run_id = parse_uuid(cmd.run_id, "runId")
    run = services.runs.get_run(run_id)
    if run.ended:
        raise RunStateError(str(run_id), f"cannot resume: the run is {run.status}")
    return _go(services, run_id, cmd.wait, call, repeated=False)


def forge_list_runs(cmd: c.ListRuns, services: CommandServices, call: Call) -> Result:
    query = c.ListEntities(collection=c.ARTIFACTS, filter=cmd.filter, order_by=cmd.order_by,
                           limit=cmd.limit, cursor=cmd.cursor)
    listed = data_list(query, services, call)
    # An imported artifact is the file's own fields (a legacy alloy has no hardwareNode, a
    # provenance may lack runId): what it lacks is listed as null, never a KeyError (#17 item 12).
    runs = [{"runId": (a.get("provenance") or {}).get("runId"), "artifactId": a["id"],
             "status": a.get("status"), "recipeId": a.get("recipeId"),
             "recipeVersion": a.get("recipeVersion"), "hardwareNode": a.get("hardwareNode"),
             "forgedAt": a.get("forgedAt"), "alloyHash": a.get("alloyHash")}
            for a in listed["items"]]
    return {"runs": runs, "count": len(runs), "nextCursor": listed["nextCursor"]}


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("forge/run", c.RunRecipe, forge_run, "run", "request a run and execute it"),
    CommandSpec("forge/status", c.RunRef, forge_status, "read", "a run's status and stages"),
    CommandSpec("forge/cancel", c.CancelRun, forge_cancel, "run", "cancel a run"),
    CommandSpec("forge/resume", c.ResumeRun, forge_resume, "run", "resume an interrupted run"),
    CommandSpec("forge/list-runs", c.ListRuns, forge_list_runs, "read", "list runs"),
    CommandSpec("forge/publish", c.PublishArtifact, forge_publish, "publish",
                "publish a sealed artifact"),
)
