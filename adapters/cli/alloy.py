"""`foundry card`, `forge publish`, `import-alloy`, `export-alloy`, `keys`, `verify`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_alloy_commands(sub: Any) -> None:
    c = sub.add_parser("card", help="render README.md and MODEL_METHODOLOGY.md of an artifact")
    c.add_argument("id", help="artifact id or run id")
    c.add_argument("--out", required=True, help="directory to write the cards into")
    c.set_defaults(run=_card)

    p = sub.add_parser("publish", help="publish a completed artifact (file:///dir or hf://org/repo)")
    p.add_argument("id", help="artifact id or run id")
    p.add_argument("target", help="file:///absolute/dir or hf://org/repo")
    p.add_argument("--force", action="store_true", help="publish although the gate failed")
    p.add_argument("--reason", default="", help="why (required with --force; recorded)")
    p.set_defaults(run=_publish)

    i = sub.add_parser("import-alloy", help="import .alloy.json files as recipes (and runs)")
    i.add_argument("paths", nargs="+", help="files or directories of *.alloy.json")
    i.set_defaults(run=_import)

    k = sub.add_parser("keys", help="signing keys for integrity attestations")
    ks = k.add_subparsers(metavar="ACTION")
    kc = ks.add_parser("create", help="create an ES256 key pair (private key file mode 0600)")
    kc.add_argument("--dir", help="where (default: FOUNDRY_KEYS_DIR or the user config dir)")
    kc.add_argument("--overwrite", action="store_true", help="replace an existing key")
    kc.set_defaults(run=_keys_create)

    v = sub.add_parser("verify", help="check alloyHash, weights, card and signature")
    v.add_argument("subject", help="artifact id, run id, or a .alloy.json file")
    v.add_argument("--model-dir", help="directory of the weight files to check")
    v.add_argument("--readme", help="README.md to check (default: next to the file)")
    v.add_argument("--trust", action="append", default=[], metavar="KEY_ID",
                   help="accept only signatures by these key ids")
    v.set_defaults(run=_verify)

    e = sub.add_parser("export-alloy", help="write a recipe or artifact as .alloy.json")
    e.add_argument("id", help="artifact, run or recipe id")
    e.add_argument("--out", help="file to write (default: stdout)")
    e.set_defaults(run=_export)


def _emit(obj: dict[str, Any]) -> int:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    return 0 if obj.get("success") else 1


def _guard(action: Any) -> int:
    """Run an action; a refused one prints an envelope, like every other command."""
    from foundry.adapters.commands.bus import envelope, failure
    from foundry.domain.errors import FoundryError

    try:
        return _emit(envelope(**action()))
    except FoundryError as e:
        return _emit(failure(e))


def _card(foundry: Any, args: argparse.Namespace) -> int:
    def action() -> dict[str, Any]:
        from foundry.adapters.publishing.cards import card_hash, write_cards
        from foundry.adapters.commands.forge import _run_of
        from foundry.adapters.publishing.publish import publishable_artifact
        from foundry.adapters.commands.validation import parse_uuid

        run = foundry.runs.get_run(_run_of(foundry, parse_uuid(args.id)))
        artifact = publishable_artifact(run.state)
        paths = write_cards(artifact, Path(args.out))
        readme = paths["README.md"].read_text(encoding="utf-8")
        return {"files": {k: str(v) for k, v in paths.items()}, "cardHash": card_hash(readme)}

    return _guard(action)


def _publish(foundry: Any, args: argparse.Namespace) -> int:
    return _emit(foundry.execute("forge/publish", {"id": args.id, "target": args.target,
                                                   "force": args.force,
                                                   "reason": args.reason}))


def _alloy_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        files += sorted(path.glob("*.alloy.json")) if path.is_dir() else [path]
    return files


def _import(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.publishing.alloy_io import import_alloy

    def action() -> dict[str, Any]:
        results = []
        for path in _alloy_files(args.paths):
            results.append(import_alloy(foundry, path))
            for note in results[-1]["migrations"]:
                print(f"{path.name}: migrated: {note}", file=sys.stderr)
        return {"imported": results, "count": len(results)}

    return _guard(action)


def _export(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.publishing.alloy_io import export_alloy
    from foundry.adapters.commands.validation import parse_uuid

    def action() -> dict[str, Any]:
        alloy = export_alloy(foundry, parse_uuid(args.id))
        text = json.dumps(alloy, indent=2, ensure_ascii=False) + "\n"
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            return {"file": args.out}
        sys.stdout.write(text)
        return {}

    if args.out:
        return _guard(action)
    try:
        action()
    except Exception as e:
        from foundry.adapters.commands.bus import failure

        return _emit(failure(e))
    return 0



def _keys_create(_foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.publishing.attestation import create_key

    try:
        info = create_key(Path(args.dir) if args.dir else None, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"error: {e} (use --overwrite to replace it)", file=sys.stderr)
        return 1
    print(f"key {info.key_id} in {info.directory}")
    return 0


def _verify(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.publishing.attestation import verify

    path = Path(args.subject)
    readme = Path(args.readme) if args.readme else None
    if path.is_file():
        artifact = json.loads(path.read_text(encoding="utf-8"))
        sibling = path.with_name("README.md")
        readme = readme or (sibling if sibling.is_file() else None)
    else:
        from foundry.adapters.commands.forge import _run_of
        from foundry.adapters.publishing.publish import publishable_artifact
        from foundry.adapters.commands.validation import parse_uuid
        from foundry.domain.artifact_builder import build_artifact

        state = foundry.runs.get_run(_run_of(foundry, parse_uuid(args.subject))).state
        artifact = {**publishable_artifact(state), "receipt": build_artifact(state).get("receipt")}
    links = verify(artifact, model_dir=Path(args.model_dir) if args.model_dir else None,
                   readme=readme, trusted_key_ids=set(args.trust) or None)
    for link in links:
        status = "ok" if link.ok else "BROKEN"
        print(f"{link.name:<10} {status:<7} expected {link.expected}  found {link.found}"
              + (f"  ({link.detail})" if link.detail else ""))
    return 0 if all(link.ok for link in links) else 1
