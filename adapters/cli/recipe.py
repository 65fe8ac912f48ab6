"""`foundry recipe ...`: friendly verbs over the data/* commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

RECIPES = "forge_recipes"


def add_recipe_commands(sub: Any) -> None:
    p = sub.add_parser("recipe", help="create, show, edit, list, fork recipes; show history")
    p.add_argument("--json", action="store_true", help="print the raw result envelope")
    rs = p.add_subparsers(metavar="VERB")

    c = rs.add_parser("create", help="create a recipe from a JSON file")
    c.add_argument("file", help="recipe JSON (camelCase fields, as in examples/)")
    c.add_argument("--command-id", help="idempotency key: a repeat returns the first result")
    c.add_argument("--author", default="")
    c.set_defaults(run=_create)

    s = rs.add_parser("show", help="print the current recipe")
    s.add_argument("id")
    s.set_defaults(run=_show)

    e = rs.add_parser("edit", help="change fields of a recipe (one event per edit)")
    e.add_argument("id")
    e.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a top-level field; VALUE is JSON, or a plain string")
    e.add_argument("--data", help="JSON object (or @file) of fields to change")
    e.add_argument("--expected-revision", type=int, help="refuse if the recipe moved on")
    e.add_argument("--reason", default="", help="why: kept in the history")
    e.add_argument("--author", default="")
    e.add_argument("--command-id")
    e.set_defaults(run=_edit)

    ls = rs.add_parser("list", help="list recipes (filter and order run in the database)")
    ls.add_argument("--filter", help='Mongo-style JSON, e.g. \'{"author": "ana"}\'')
    ls.add_argument("--order-by", action="append", default=[], metavar="FIELD[:desc]")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--cursor", help="the nextCursor of the previous page")
    ls.add_argument("--include-archived", action="store_true")
    ls.set_defaults(run=_list)

    h = rs.add_parser("history", help="every edit: who, when, what changed, revision")
    h.add_argument("id")
    h.set_defaults(run=_history)

    f = rs.add_parser("fork", help="new recipe from an existing one (lineage kept)")
    f.add_argument("id")
    f.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    f.add_argument("--author", default="")
    f.add_argument("--command-id")
    f.set_defaults(run=_fork)

    d = rs.add_parser("delete", help="archive a recipe (its history is kept)")
    d.add_argument("id")
    d.add_argument("--reason", default="")
    d.set_defaults(run=_delete)


def _sets(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _go(foundry: Any, args: argparse.Namespace, command: str, params: dict[str, Any],
        show: Any) -> int:
    from foundry.adapters.cli.common import run_command

    if args.json:
        return run_command(foundry, command, params)
    result = foundry.execute(command, params)
    if not result.get("success"):
        sys.stderr.write(f"error ({result.get('errorCode')}): {result.get('error')}\n")
        return 1
    show(result)
    return 0


def _create(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.cli.common import load_json_arg

    data = load_json_arg("@" + args.file, "file")
    params = {"collection": RECIPES, "data": data, "commandId": args.command_id,
              "author": args.author}
    return _go(foundry, args, "data/create", params,
               lambda r: print(f"created {r['id']} (revision {r['revision']})"))


def _show(foundry: Any, args: argparse.Namespace) -> int:
    return _go(foundry, args, "data/read", {"collection": RECIPES, "id": args.id},
               lambda r: print(json.dumps(r["data"], indent=2) if r["found"] else "not found"))


def _edit(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.cli.common import load_json_arg

    data = {**(load_json_arg(args.data, "data") if args.data else {}), **_sets(args.set)}
    params = {"collection": RECIPES, "id": args.id, "data": data, "reason": args.reason,
              "author": args.author, "expectedRevision": args.expected_revision,
              "commandId": args.command_id}

    def show(r: dict[str, Any]) -> None:
        print(f"revision {r['previousRevision']} -> {r['newRevision']}")
        for ch in r.get("changes", []):
            print(f"  {ch['field']}: {json.dumps(ch['old'])} -> {json.dumps(ch['new'])}")

    return _go(foundry, args, "data/update", params, show)


def _list(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.cli.common import load_json_arg

    order = []
    for spec in args.order_by:
        field, _, direction = spec.partition(":")
        order.append({"field": field, "direction": direction or "asc"})
    params = {"collection": RECIPES, "limit": args.limit, "cursor": args.cursor,
              "filter": load_json_arg(args.filter, "filter") if args.filter else None,
              "orderBy": order or None, "includeArchived": args.include_archived}

    def show(r: dict[str, Any]) -> None:
        for it in r["items"]:
            print(f"{it['id']}  {it.get('name', '')}  v{it.get('version', '')}  "
                  f"rev {it['revision']}  {it['updatedAt']}")
        print(f"{r['count']} shown" + (f"; next page: --cursor {r['nextCursor']}"
                                       if r.get("nextCursor") else ""))

    return _go(foundry, args, "data/list", params, show)


def _history(foundry: Any, args: argparse.Namespace) -> int:
    def show(r: dict[str, Any]) -> None:
        for it in r["items"]:
            who = it["author"] or "-"
            print(f"rev {it['revision']}  {it['at']}  {it['event']}  by {who}"
                  + (f"  ({it['reason']})" if it["reason"] else ""))
            if it["event"] == "Edited":
                for ch in it["changes"]:
                    print(f"    {ch['field']}: {json.dumps(ch['old'])} -> {json.dumps(ch['new'])}")

    return _go(foundry, args, "data/history", {"collection": RECIPES, "id": args.id}, show)


def _fork(foundry: Any, args: argparse.Namespace) -> int:
    params = {"id": args.id, "data": _sets(args.set), "author": args.author,
              "commandId": args.command_id}
    return _go(foundry, args, "recipe/fork", params,
               lambda r: print(f"forked {r['parentRecipeId']} -> {r['id']}"))


def _delete(foundry: Any, args: argparse.Namespace) -> int:
    params = {"collection": RECIPES, "id": args.id, "reason": args.reason}
    return _go(foundry, args, "data/delete", params,
               lambda r: print(f"archived {r['id']}" if r["deleted"] else "already archived"))
