"""The main job, end to end on the embedded default store (a SQLite file, no server).

Builds a corpus and a tiny Llama locally (nothing is downloaded), then, through the `foundry`
CLI exactly as a person would type it: creates the example recipe, edits it to point at the
corpus built here, lists recipes, shows the history, forges the recipe (prune, train, LoRA,
GGUF quantization, eval, hardware verification), and prints the artifact and its lineage.

Run it again and it reuses what exists: the same recipe (command ids), the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".foundry"
EXAMPLE = ROOT / "examples" / "tiny-recipe.json"


def foundry(*args: str, capture: bool = False, db: str | None = None) -> str:
    cmd = ["foundry", *(["--db", db] if db else []), *args]
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    exe = [str(Path(sys.executable).with_name("foundry")), *cmd[1:]]
    done = subprocess.run(exe, check=True, text=True, capture_output=capture)
    if capture:
        print(done.stdout, end="")
    return done.stdout if capture else ""


def build_inputs(work: Path = WORK) -> tuple[Path, Path]:
    """(corpus dir, model dir) under `work`, built once by the scripts/ tools, then reused."""
    # The model's folder names its tokenizer: one built before the move to SmolLM2's (a
    # locally trained BPE that llama.cpp's GGUF converter refuses) is not reused.
    corpus, model = work / "corpus", work / "models" / "tiny-llama-smollm2"
    py = sys.executable
    if not (corpus / "train.txt").exists():
        subprocess.run([py, str(ROOT / "scripts/make_corpus.py"), "--out", str(corpus)],
                       check=True)
    if not (model / "config.json").exists():
        subprocess.run([py, str(ROOT / "scripts/make_tiny_model.py"), "--out", str(model)],
                       check=True)
    # Runs read local paths only under read roots (docs/security.md): the demo's own inputs.
    roots = os.environ.get("FOUNDRY_MODEL_ROOTS", "")
    if str(work) not in roots.split(os.pathsep):
        os.environ["FOUNDRY_MODEL_ROOTS"] = os.pathsep.join(p for p in (roots, str(work)) if p)
    return corpus, model


def local_inputs(corpus: Path, model: Path) -> dict[str, Any]:
    """The recipe fields that point the example at the corpus and model built here."""
    from foundry.executors.corpus import corpus_ref

    return {
        "calibrationCorpus": corpus_ref(corpus, "python-stdlib-docs"),
        "source": {"baseModel": str(model), "architecture": "llama"},
    }


def signing_key_id() -> str | None:
    """The hex id of the public signing key in the keys directory, or None without one."""
    from foundry.adapters.publishing.attestation import PUBLIC_KEY_FILE
    from foundry.adapters.settings import Settings

    public = Settings.from_env().keys.dir / PUBLIC_KEY_FILE
    if not public.is_file():
        return None
    return hashlib.sha256(public.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="store URL (default: the embedded default store)")
    args = parser.parse_args()
    corpus, model = build_inputs()
    key = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()[:16]
    created = json.loads(foundry("recipe", "--json", "create", str(EXAMPLE), "--command-id",
                                 f"demo-create-{key}", capture=True, db=args.db))
    recipe_id = created["id"]
    edits = local_inputs(corpus, model)
    foundry("recipe", "edit", recipe_id,
            "--set", f"calibrationCorpus={json.dumps(edits['calibrationCorpus'])}",
            "--set", f"source={json.dumps(edits['source'])}",
            "--reason", "point at the corpus and the model built on this machine",
            "--author", "demo", db=args.db)
    foundry("recipe", "list", "--order-by", "updatedAt:desc", "--limit", "5", db=args.db)
    foundry("recipe", "history", recipe_id, db=args.db)
    # The run's command id names the signing key too: once a key exists (the first sealed run
    # creates it under FOUNDRY_SIGNING=auto, or `foundry keys create`), the demo forges a new,
    # signed run (its stages reused) instead of answering with an earlier, unsigned one.
    signer = signing_key_id()
    run_key = f"{key}-{signer[:16]}" if signer else key
    foundry("forge", "run", recipe_id, "--command-id", f"demo-run-{run_key}", db=args.db)
    runs = json.loads(foundry("forge", "list", "--filter", json.dumps({"recipeId": recipe_id}),
                              "--limit", "1", capture=True, db=args.db))
    artifact_id = runs["runs"][0]["artifactId"]
    foundry("exec", "data/read", json.dumps({"collection": "forge_artifacts",
                                             "id": artifact_id}), capture=True, db=args.db)
    foundry("lineage", artifact_id, db=args.db)
    foundry("audit", "replay", runs["runs"][0]["runId"], capture=True, db=args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
