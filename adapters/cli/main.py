"""The `foundry` command line. Every verb goes through the same `execute` dispatcher."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from foundry.adapters.cli.common import load_json_arg, run_command
from foundry.adapters.cli.common import print_json as _print
from foundry.adapters.log_setup import configure_logging
from foundry.adapters.store.config import ENV_DATABASE_URL, redact_url, scrub_url_secret
from foundry.domain.errors import FoundryError

EPILOG = f"""\
The store: --db URL, else ${ENV_DATABASE_URL}, else a SQLite file in your user data dir.
  sqlite:///path/to/foundry.db      embedded, no server (the default)
  postgresql://user@host:5432/db    shared PostgreSQL
Examples:
  foundry recipe create examples/tiny-recipe.json
  foundry recipe list --filter '{{"tags": {{"$contains": "code"}}}}' --order-by updatedAt:desc
  foundry exec data/read '{{"collection": "forge_recipes", "id": "<uuid>"}}'
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_name = " ".join(a for a in (argv if argv is not None else sys.argv[1:])[:2]
                                 if not a.startswith("-"))
    configure_logging(args.log_level)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    if not getattr(args, "needs_store", True):
        code: int = args.run(None, args)
        return code
    from foundry.adapters.bootstrap import Foundry, os_user
    from foundry.adapters.commands.bus import classify, failure
    from foundry.adapters.errors import StoreUnavailableError

    try:
        foundry = Foundry.open(args.db)
    except Exception as e:
        raw = args.db or os.environ.get(ENV_DATABASE_URL)
        where = redact_url(raw) if raw else "the default store"
        err = e if hasattr(e, "code") else StoreUnavailableError(where, e)
        body = failure(err)
        body["error"] = scrub_url_secret(body["error"], raw)  # a driver may quote its DSN
        _print(body)
        return 3
    with foundry:
        try:
            code = args.run(CliFoundry(foundry, os_user()), args)
        except FoundryError as e:  # a bad file or JSON argument: an envelope, no traceback
            _print(failure(e))
            return 1
        except Exception as e:
            _print(failure(classify(e, f"cli:{args.command_name}", foundry)))
            return 1
    return code


# The params that say who did something: the history's author, a run's requester, who
# cancelled. The CLI fills those the caller left out with the OS user (HTTP overrides them
# with the token's principal instead: adapters/http/auth.py).
WHO_FIELDS = ("author", "requested_by", "by")


class CliFoundry:
    """The system as the CLI uses it: every command carries the OS user as its principal,
    and a who-did-it param left out is that user (a recipe's history says who edited it, a
    run who requested it). Everything else is the Foundry's own."""

    def __init__(self, foundry: Any, principal: str) -> None:
        self.foundry, self.principal = foundry, principal

    def execute(self, command: str, params: Any, *, progress: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = self.foundry.execute(
            command, self._with_user(command, params), progress=progress,
            principal=self.principal)
        return result

    def _with_user(self, command: str, params: Any) -> Any:
        if not self.principal or not isinstance(params, dict) \
                or command not in self.foundry.services.commands:
            return params  # the bus answers an unknown command or a non-object, by name
        model = self.foundry.services.commands.get(command).params
        filled = dict(params)
        for name in WHO_FIELDS:
            field = model.model_fields.get(name)
            if field is not None and not (filled.get(name) or filled.get(field.alias or name)):
                filled[field.alias or name] = self.principal
        return filled

    def __getattr__(self, name: str) -> Any:
        return getattr(self.foundry, name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry", description="Forge ML models from event-sourced recipes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", help="database URL (see below)")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("exec", help="run any command with JSON params; prints the envelope")
    p.add_argument("command", help="e.g. data/create, data/list, forge/run")
    p.add_argument("params", nargs="?", default="{}", help="JSON object, or @file.json")
    p.set_defaults(run=_exec)

    from foundry.adapters.cli.recipe import add_recipe_commands

    add_recipe_commands(sub)
    from foundry.adapters.cli.forge import add_forge_commands

    add_forge_commands(sub)
    from foundry.adapters.cli.alloy import add_alloy_commands

    add_alloy_commands(sub)
    from foundry.adapters.cli.eval import add_eval_commands

    add_eval_commands(sub)
    from foundry.adapters.cli.cluster import add_cluster_commands

    add_cluster_commands(sub)
    from foundry.adapters.cli.serve import add_serve_commands

    add_serve_commands(sub)
    p = sub.add_parser("projections", help="projection maintenance")
    psub = p.add_subparsers(metavar="ACTION")
    r = psub.add_parser("rebuild", help="drop every view and replay all events into it")
    r.set_defaults(run=_rebuild)
    r = psub.add_parser("run", help="keep the views caught up until interrupted "
                        "(PostgreSQL: the library's ProjectionRunner; SQLite: polling)")
    r.add_argument("--seconds", type=float, help="stop after this long (default: forever)")
    r.set_defaults(run=_projections_run)
    d = sub.add_parser("db", help="database maintenance")
    dsub = d.add_subparsers(metavar="ACTION")
    r = dsub.add_parser("init", help="create every table once (before workers start)")
    r.set_defaults(run=_db_init)
    return parser


def _exec(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.commands.bus import failure
    from foundry.domain.errors import InvalidInputError

    try:
        params = load_json_arg(args.params)
    except InvalidInputError as e:
        _print(failure(e))
        return 1
    return run_command(foundry, args.command, params)


def _rebuild(foundry: Any, _args: argparse.Namespace) -> int:
    views = {}
    for name, host in foundry.hosts().items():
        stats = host.rebuild()
        views[name] = {"events": stats.events, "seconds": round(stats.seconds, 3),
                       "eventsPerSecond": round(stats.events / max(stats.seconds, 1e-9))}
    _print({"success": True, "views": views})
    return 0


def _projections_run(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.projections.runner import run_projections

    run_projections(foundry, stop_after=args.seconds)
    return 0


def _db_init(foundry: Any, _args: argparse.Namespace) -> int:
    # Opening the store created every table (serialised by an advisory lock on PostgreSQL).
    _print({"success": True, "store": foundry.config.display_url, "tables": "ready"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
