#!/usr/bin/env python3
"""Build a tiny, untrained Llama model with its own BPE tokenizer, fully offline.

Trains a GPT-2-style byte-level BPE tokenizer on a corpus file, creates a LlamaForCausalLM
initialised from --seed, and saves both in the Hugging Face layout (config.json,
model.safetensors, tokenizer.json, ...) into --out. The same arguments and corpus always give
byte-identical files. Without --corpus, the standard-library corpus (scripts/make_corpus.py) is
built into a temporary directory and its train.txt is used (it is reproducible, so nothing is
kept; its hash is printed).

The default shape (hidden 256, intermediate 768, 4 layers, 4 heads, 2 KV heads, vocabulary
1024; 3.7M parameters, 14.7 MB fp32) keeps every matrix width a multiple of 256, so llama.cpp's
K-quants really apply. Needs the `ml` extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for the model files"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        metavar="FILE",
        help="text file to train the tokenizer on (default: a freshly built stdlib corpus)",
    )
    shape = parser.add_argument_group("model shape")
    shape.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    shape.add_argument(
        "--intermediate", type=int, default=768, help="MLP intermediate size (default 768)"
    )
    shape.add_argument("--layers", type=int, default=4, help="decoder layers (default 4)")
    shape.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    shape.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default 2)")
    shape.add_argument(
        "--vocab", type=int, default=1024, help="tokenizer vocabulary (default 1024)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="weight initialisation seed (default 0)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from foundry.executors.corpus import build_stdlib_corpus, corpus_hash
    from foundry.executors.tiny_model import build_tiny_llama

    shape = {
        "hidden": args.hidden,
        "intermediate": args.intermediate,
        "layers": args.layers,
        "heads": args.heads,
        "kv_heads": args.kv_heads,
        "vocab": args.vocab,
        "seed": args.seed,
    }
    if args.corpus is not None:
        corpus_id = corpus_hash(args.corpus)
        out = build_tiny_llama(args.out, args.corpus, **shape)
    else:
        with tempfile.TemporaryDirectory(prefix="foundry-corpus-") as tmp:
            corpus = build_stdlib_corpus(Path(tmp)) / "train.txt"
            corpus_id = corpus_hash(corpus)
            out = build_tiny_llama(args.out, corpus, **shape)
    print(f"tokenizer corpus: {args.corpus or 'stdlib train.txt'}  {corpus_id}")
    print(f"model: {out}  {corpus_hash(out)}")
    for path in sorted(out.iterdir()):
        if path.is_file():
            print(f"  {path.name:<24}{path.stat().st_size:>12,} bytes  {corpus_hash(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
