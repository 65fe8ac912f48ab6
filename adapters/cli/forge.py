"""`foundry forge ...`, `foundry lineage`, `foundry audit replay`: runs from the command line."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from foundry.adapters.cli.display import make_listener


def add_forge_commands(sub: Any) -> None:
    p = sub.add_parser("forge", help="run recipes; inspect, cancel and resume runs")
    fs = p.add_subparsers(metavar="ACTION")
    _add_run_and_rehearse(fs)
    _add_run_control(fs)

    lin = sub.add_parser("lineage", help="what led to an artifact, run or recipe (Markdown)")
    lin.add_argument("id", help="artifact id, run id or recipe id")
    lin.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    lin.set_defaults(run=_lineage)

    _add_audit_commands(sub)


def _add_run_and_rehearse(fs: Any) -> None:
    r = fs.add_parser("run", help="forge a recipe (by id, or a recipe JSON file to create)")
    r.add_argument("recipe", help="recipe id, or path to a recipe JSON file")
    r.add_argument("--node", default="cpu@local", help="hardware node <class>@<site> or any")
    r.add_argument("--publish", help="publish target (hf://org/repo or file:///dir)")
    r.add_argument("--version", help="recipe version to run (default: the current one)")
    r.add_argument("--command-id", help="idempotency key: the same key resumes the same run")
    r.add_argument("--detach", action="store_true",
                   help="return at once (a background worker, or the Ray dispatcher)")
    r.add_argument("--json", action="store_true", help="print the result envelope as JSON")
    r.add_argument("--no-reuse", action="store_true",
                   help="compute every stage, even one whose fingerprint a completed stage has")
    r.set_defaults(run=_run)

    rh = fs.add_parser("rehearse", help="forge a recipe on a scale model of its base here; "
                       "project its cost at full size (never publishable)")
    rh.add_argument("recipe", help="recipe id, a recipe JSON file, or an .alloy.json to import")
    rh.add_argument("--node", default="any",
                    help="the node class the full-size run would get, <class>@<site>: the "
                    "projection compares each stage's peak memory with its VRAM")
    rh.add_argument("--detach", action="store_true", help="return at once")
    rh.add_argument("--json", action="store_true", help="print the result envelope as JSON")
    rh.set_defaults(run=_rehearse)


def _add_run_control(fs: Any) -> None:
    for name, help_text, handler in (
        ("status", "state of a run, its stages and whether its owner is alive", _status),
        ("cancel", "cancel a run that has not finished", _cancel),
        ("resume", "continue an interrupted run (skips verified completed stages)", _resume),
    ):
        a = fs.add_parser(name, help=help_text)
        a.add_argument("run_id")
        if name == "resume":
            a.add_argument("--detach", action="store_true")
        if name == "cancel":
            a.add_argument("--reason", default="")
        a.set_defaults(run=handler)

    ls = fs.add_parser("list", help="list runs (newest first)")
    ls.add_argument("--filter", help="Mongo-style JSON over artifact fields (recipeId, status...)")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(run=_list)


def _add_audit_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="audits of the event store")
    asub = audit.add_subparsers(metavar="ACTION")
    rep = asub.add_parser("replay", help="rebuild a run's artifact from its events; compare")
    rep.add_argument("run_id")
    rep.set_defaults(run=_replay)
    evs = asub.add_parser("events", help="read back every stored event; list damaged ones")
    evs.set_defaults(run=_audit_events)
    recs = asub.add_parser("recipes", help="replay every recipe's events; compare with the "
                           "view and the runs' pins")
    recs.set_defaults(run=_audit_recipes)
    cp = asub.add_parser("checkpoint", help="sign a checkpoint of both event logs (needs a key)")
    cp.set_defaults(run=lambda f, _a: _emit(f.execute("audit/checkpoint", {})))
    cps = asub.add_parser("checkpoints", help="recompute every signed checkpoint; name rewrites")
    cps.set_defaults(run=_audit_checkpoints)
    inf = asub.add_parser("in-flight", help="runs not completed; imported alloys without "
                          "recipe or runs (Markdown)")
    inf.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    inf.set_defaults(run=_audit_in_flight)


def _emit(result: dict[str, Any]) -> int:
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0 if result.get("success") else 1


def _recipe_id(foundry: Any, ref: str) -> str | None:
    """A recipe id as given, or the id of the recipe in a JSON file (created once: the
    file's content hash is the command id, so running the same file again reuses it)."""
    path = Path(ref)
    if not path.is_file():
        return ref
    raw = path.read_bytes()
    created = foundry.execute("data/create", {
        "collection": "forge_recipes", "data": json.loads(raw),
        "commandId": "recipe-file:" + hashlib.sha256(raw).hexdigest(),
    })
    if not created["success"]:
        _emit(created)
        return None
    print(f"recipe {created['id']} ({path})", file=sys.stderr)
    return str(created["id"])


def _run(foundry: Any, args: argparse.Namespace) -> int:
    recipe_id = _recipe_id(foundry, args.recipe)
    if recipe_id is None:
        return 1
    result = foundry.execute("forge/run", {
        "recipeId": recipe_id, "hardwareNode": args.node, "publishTarget": args.publish,
        "recipeVersion": args.version, "commandId": args.command_id, "wait": not args.detach,
        "reuse": not args.no_reuse,
    }, progress=make_listener(sys.stderr))
    if args.json or not result.get("success"):
        return _emit(result)
    _print_summary(result)
    return 0 if result["status"] in ("completed", "requested", "running") else 1


def _rehearse(foundry: Any, args: argparse.Namespace) -> int:
    if args.recipe.endswith(".alloy.json") and Path(args.recipe).is_file():
        imported = foundry.execute("alloy/import", {"paths": [args.recipe]})
        if not imported["success"]:
            return _emit(imported)
        recipe_id: str | None = str(imported["imported"][0]["recipeId"])
        print(f"recipe {recipe_id} (imported from {args.recipe})", file=sys.stderr)
    else:
        recipe_id = _recipe_id(foundry, args.recipe)
    if recipe_id is None:
        return 1
    result = foundry.execute("forge/run", {
        "recipeId": recipe_id, "hardwareNode": args.node, "rehearsal": True,
        "wait": not args.detach}, progress=make_listener(sys.stderr))
    if args.json or not result.get("success"):
        return _emit(result)
    _print_summary(result)
    _print_rehearsal(result["rehearsal"])
    return 0 if result["status"] in ("completed", "requested", "running") else 1


def _print_rehearsal(r: dict[str, Any]) -> None:
    scale = r["scaleModel"]
    tok = scale["tokenizer"]
    print(f"REHEARSAL (never publishable) on a scale model of {r['of']['baseModel']}: "
          f"{scale['layers']['scale']} of {scale['layers']['base']} layers, hidden "
          f"{scale['widths']['hidden']}, tokenizer {tok['name']}"
          + ("" if tok["real"] else " (stand-in)") + f"; config from {scale['baseConfigFrom']}")
    for p in r["passedOver"]:
        print(f"  passed over: stages[{p['index']}] {p['type']}: {p['reason']}")
    for c in r["stepCaps"]:
        where = f"stages[{c['index']}] {c['type']}." if "index" in c else ""
        print(f"  capped: {where}{c['field']} {c['from']} -> {c['to']}")
    for s in r["standIns"]:
        print(f"  stand-in: {s['kind']} {s['replaced']} -> {s['by']} ({s['why']})")
    proj = r["projection"]
    print(f"projection: {proj['parameters']['billions']}B parameters; disk "
          + ", ".join(f"{t} {d['gb']} GB" for t, d in proj["diskGb"].items()))
    mem = proj["memory"]
    print(f"  peak memory per stage (minVramGb {mem['minVramGb']}, recommendedVramGb "
          f"{mem['recommendedVramGb']}, node {mem['node']['hardwareNode']}: "
          f"{mem['node']['vramGb']} GB):")
    for row in mem["stages"]:
        fits = ", ".join(f"{k}={v}" for k, v in row.items() if k.startswith("fits"))
        print(f"    stages[{row['index']}] {row['type']}: {row['peakGb']} GB"
              + (f" ({fits})" if fits else ""))
    for warning in proj["warnings"]:
        print(f"  warning: {warning}")


def _print_summary(r: dict[str, Any]) -> None:
    print(f"run {r['runId']}: {r['status']}")
    print(f"artifact {r['artifactId']}" + (f"  alloyHash {r['alloyHash']}" if r["alloyHash"]
                                           else ""))
    if r.get("gate"):
        print(f"gate: {'passed' if r['gate']['passed'] else 'FAILED'}: "
              + "; ".join(r["gate"]["reasons"]))
    if r.get("failure"):
        print(f"failed: {r['failure']['type']}: {r['failure']['message']}")
    if r.get("detached"):
        print(f"worker pid {r['workerPid']}; follow with: foundry forge status {r['runId']}")


def _status(foundry: Any, args: argparse.Namespace) -> int:
    return _emit(foundry.execute("forge/status", {"runId": args.run_id}))


def _cancel(foundry: Any, args: argparse.Namespace) -> int:
    return _emit(foundry.execute("forge/cancel", {"runId": args.run_id, "reason": args.reason}))


def _resume(foundry: Any, args: argparse.Namespace) -> int:
    return _emit(foundry.execute("forge/resume", {"runId": args.run_id,
                                                  "wait": not args.detach},
                                 progress=make_listener(sys.stderr)))


def _list(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.cli.common import load_json_arg

    params: dict[str, Any] = {"limit": args.limit,
                              "orderBy": [{"field": "requestedAt", "direction": "desc"}]}
    if args.filter:
        params["filter"] = load_json_arg(args.filter, "filter")
    return _emit(foundry.execute("forge/list-runs", params))


def _lineage(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.commands.lineage_markdown import render_markdown

    result = foundry.execute("lineage/report", {"id": args.id})
    if args.json or not result.get("success"):
        return _emit(result)
    sys.stdout.write(render_markdown(result))
    return 0


def _audit_checkpoints(foundry: Any, _args: argparse.Namespace) -> int:
    result = foundry.execute("audit/checkpoints", {})
    code = _emit(result)
    return code if not result.get("success") else (0 if result["ok"] else 1)


def _audit_recipes(foundry: Any, _args: argparse.Namespace) -> int:
    result = foundry.execute("audit/recipes", {})
    code = _emit(result)
    return code if not result.get("success") else (0 if result["ok"] else 1)


def _audit_events(foundry: Any, _args: argparse.Namespace) -> int:
    result = foundry.execute("audit/events", {})
    code = _emit(result)
    return code if not result.get("success") else (0 if result["ok"] else 1)


def _audit_in_flight(foundry: Any, args: argparse.Namespace) -> int:
    """Exit 0 when there is nothing to settle, 1 when there is (or the command failed)."""
    from foundry.adapters.commands.audit_inflight import render_markdown

    result = foundry.execute("audit/in-flight", {})
    if args.json or not result.get("success"):
        code = _emit(result)
        return code if not result.get("success") else (0 if result["clear"] else 1)
    sys.stdout.write(render_markdown(result))
    return 0 if result["clear"] else 1


def _replay(foundry: Any, args: argparse.Namespace) -> int:
    result = foundry.execute("audit/replay", {"runId": args.run_id})
    code = _emit(result)
    return code if not result.get("success") else (0 if result["ok"] else 1)
