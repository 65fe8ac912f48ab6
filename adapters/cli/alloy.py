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
    kw = ks.add_parser("show", help="the key sealed runs are signed with, and where it is")
    kw.add_argument("--dir", help="where (default: FOUNDRY_KEYS_DIR or the user config dir)")
    kw.set_defaults(run=_keys_show)

    v = sub.add_parser("verify", help="check alloyHash, weights, card and signature")
    v.add_argument("subject", help="artifact id, run id, or a .alloy.json file")
    v.add_argument("--model-dir", help="directory of the weight files to check")
    v.add_argument("--gguf-dir", help="directory of the GGUF tiers, when they were published "
                                      "to a repo of their own (hf://...?gguf=); with "
                                      "--model-dir")
    v.add_argument("--readme", help="README.md to check (default: next to the file)")
    v.add_argument("--trust", action="append", default=[], metavar="KEY_ID",
                   help="accept only signatures by these key ids")
    v.add_argument("--require-signature", action="store_true",
                   help="fail on `signature: none` and `weights: not recorded`")
    v.set_defaults(run=_verify)

    e = sub.add_parser("export-alloy", help="write a recipe or artifact as .alloy.json")
    e.add_argument("id", help="artifact, run or recipe id")
    e.add_argument("--out", help="file to write (default: stdout)")
    e.set_defaults(run=_export)


def _emit(obj: dict[str, Any]) -> int:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    return 0 if obj.get("success") else 1


def _card(foundry: Any, args: argparse.Namespace) -> int:
    return _emit(foundry.execute("artifact/card", {"id": args.id, "out": args.out}))


def _publish(foundry: Any, args: argparse.Namespace) -> int:
    return _emit(foundry.execute("forge/publish", {"id": args.id, "target": args.target,
                                                   "force": args.force,
                                                   "reason": args.reason}))


def _import(foundry: Any, args: argparse.Namespace) -> int:
    result = foundry.execute("alloy/import", {"paths": args.paths})
    for item in result.get("imported", []):
        for note in item["migrations"]:
            print(f"{Path(item['file']).name}: migrated: {note}", file=sys.stderr)
    return _emit(result)


def _export(foundry: Any, args: argparse.Namespace) -> int:
    result = foundry.execute("alloy/export", {"id": args.id, "out": args.out})
    if args.out or not result.get("success"):
        return _emit(result)
    # Without --out the file itself is the output, so that `> x.alloy.json` makes one.
    sys.stdout.write(json.dumps(result["alloy"], indent=2, ensure_ascii=False) + "\n")
    return 0


def _key_dir(args: argparse.Namespace) -> tuple[Path, str | None]:
    """--dir, else the settings' directory (FOUNDRY_KEYS_DIR or the user config dir); and
    the passphrase (FOUNDRY_KEY_PASSPHRASE). The keys verbs open no store, so they read the
    settings here, once, as bootstrap does for everything else."""
    from foundry.adapters.settings import Settings

    keys = Settings.from_env().keys
    return (Path(args.dir) if args.dir else keys.dir), keys.passphrase


def _keys_create(_foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.publishing.attestation import create_key

    directory, passphrase = _key_dir(args)
    try:
        info = create_key(directory, passphrase=passphrase, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"error: {e} (use --overwrite to replace it)", file=sys.stderr)
        return 1
    print(f"key {info.key_id} in {info.directory}")
    return 0


def _keys_show(_foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.publishing.attestation import load_key

    directory, passphrase = _key_dir(args)
    loaded = load_key(directory, passphrase)
    if loaded is None:
        print(f"no key in {directory}: the first sealed run creates one (FOUNDRY_SIGNING=auto, "
              "the default), or run 'foundry keys create'")
        return 0
    print(f"key {loaded[1].key_id} in {directory}")
    return 0


def _verify(foundry: Any, args: argparse.Namespace) -> int:
    result = foundry.execute("artifact/verify", {
        "subject": args.subject, "modelDir": args.model_dir, "ggufDir": args.gguf_dir,
        "readme": args.readme,
        "trust": args.trust, "requireSignature": args.require_signature})
    if not result.get("success"):
        return _emit(result)
    for link in result["links"]:
        status = link["status"]
        if status in ("none", "not recorded"):  # an absence: nothing to compare, say so
            print(f"{link['name'] + ':':<10} {status}  ({link['detail']})")
            continue
        print(f"{link['name']:<10} {status:<7} expected {link['expected']}  found "
              f"{link['found']}" + (f"  ({link['detail']})" if link["detail"] else ""))
    return 0 if result["ok"] else 1
