#!/usr/bin/env python3
"""Write the offline training corpus: train.txt and valid.txt from the CPython standard library.

The text is docstrings and short function sources of the running interpreter's standard
library, split by module and shuffled with a fixed seed: about 1.3 MB of train.txt and 80 KB of
valid.txt, byte-identical on every run with the same Python and seed. Nothing is downloaded.
Prints the content hash of each file and of the directory (`sha256:<hex>`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory to write train.txt and valid.txt into (created if missing)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="shuffle seed; another seed gives another split"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from foundry.executors.corpus import build_stdlib_corpus, corpus_hash

    out = build_stdlib_corpus(args.out, seed=args.seed)
    print(f"corpus: {out}  {corpus_hash(out)}")
    for name in ("train.txt", "valid.txt"):
        path = out / name
        print(f"  {name:<10}{path.stat().st_size:>12,} bytes  {corpus_hash(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
