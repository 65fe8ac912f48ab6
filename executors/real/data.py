"""The recipe's calibration corpus: find it, check its hash, cut it into token windows.

`resolve_corpus` reads `recipe["calibrationCorpus"]`. Its `sourceUrl` may be a `file://` URL,
a local path (file or directory; relative paths resolve against the working directory) or
`hf://datasets/<owner>/<name>[@<revision>][/<path>]`, which resolves through the
huggingface_hub cache only (`local_files_only=True`). The files must hash (`corpus_hash`) to
the pinned `contentHash`, or `CorpusHashMismatchError` names both hashes.

`token_windows` splits the corpus deterministically: for a directory, train.txt is the
calibration split and valid.txt the held-out split when present; otherwise the text (a file,
or a directory's files in name order) is split 90/10 by position. Windows never overlap.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from foundry.executors.corpus import corpus_hash
from foundry.executors.errors import CorpusHashMismatchError, ExecutorError
from foundry.executors.read_roots import check_corpus

Split = Literal["calibration", "heldout"]
CALIBRATION_FRACTION = 0.9
_HF_DATASET = re.compile(r"^hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?(?:/(.*))?$")


class CorpusNotFoundError(ExecutorError, FileNotFoundError):
    """Raised when the calibration corpus cannot be found; says where it looked."""

    code = "corpus_not_found"

    def __init__(self, source_url: str, looked_in: list[str]) -> None:
        self.source_url, self.looked_in = source_url, list(looked_in)
        where = "; ".join(self.looked_in) or "nowhere"
        super().__init__(f"calibration corpus {source_url!r} not found; looked in: {where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source_url, self.looked_in))


def _local_path(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def _from_hf_dataset(url: str, match: re.Match[str]) -> Path:
    from huggingface_hub import constants, snapshot_download

    repo_id, revision, sub = match.group(1), match.group(2), match.group(3) or ""
    cache = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}"
    try:
        root = Path(
            snapshot_download(
                repo_id, repo_type="dataset", revision=revision, local_files_only=True
            )
        )
    except Exception as e:  # LocalEntryNotFoundError and friends
        raise CorpusNotFoundError(url, [f"huggingface_hub cache {cache} ({e})"]) from e
    path = root / sub
    if not path.exists():
        raise CorpusNotFoundError(url, [f"huggingface_hub cache snapshot {path}"])
    return check_corpus(path, "calibrationCorpus.sourceUrl")


def resolve_source_url(url: str) -> Path:
    """A corpus `sourceUrl` as a local file or directory that exists."""
    match = _HF_DATASET.match(url)
    if match:
        return _from_hf_dataset(url, match)
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise CorpusNotFoundError(url, [f"file URL on host {parsed.netloc!r} (not local)"])
        path = Path(url2pathname(unquote(parsed.path)))
    elif "://" in url:
        raise CorpusNotFoundError(url, [f"no resolver for the scheme of {url!r} (offline)"])
    else:
        path = _local_path(url)
    if not path.exists():
        raise CorpusNotFoundError(url, [f"local path {path}"])
    # Under the read roots, regular files, size caps: checked before a byte is hashed (#17).
    return check_corpus(path, "calibrationCorpus.sourceUrl")


def resolve_corpus(recipe: Mapping[str, Any], *, override: Path | None = None) -> Path:
    """The recipe's calibration corpus as a local path whose hash matches `contentHash`.

    `override` (e.g. a path the orchestrator already materialised) replaces `sourceUrl`, but
    the hash is checked all the same.
    """
    ref = recipe.get("calibrationCorpus")
    if not isinstance(ref, Mapping):
        raise ExecutorError(
            "the recipe has no calibrationCorpus: this stage needs calibration text "
            "(set calibrationCorpus {name, contentHash, sizeBytes, sourceUrl})"
        )
    expected = str(ref.get("contentHash", ""))
    if override is not None:
        path = Path(override)
    else:
        url = ref.get("sourceUrl")
        if not url:
            raise CorpusNotFoundError(str(ref.get("name", "")), ["calibrationCorpus.sourceUrl"])
        path = resolve_source_url(str(url))
    found = corpus_hash(path)
    if found != expected:
        raise CorpusHashMismatchError(expected, found)
    return path


def corpus_for(ctx: Any) -> Path:
    """The corpus of a stage: `ctx.extras["corpusPath"]` if given, else the recipe's."""
    override = ctx.extras.get("corpusPath") if ctx.extras else None
    return resolve_corpus(ctx.recipe, override=Path(override) if override else None)


def _split_text(path: Path, split: Split) -> str:
    if path.is_dir():
        named = path / ("train.txt" if split == "calibration" else "valid.txt")
        if named.is_file() and (path / "train.txt").is_file() and (path / "valid.txt").is_file():
            return named.read_text(encoding="utf-8", errors="replace")
        files = sorted(p for p in path.rglob("*") if p.is_file())
        text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
    cut = int(len(text) * CALIBRATION_FRACTION)
    return text[:cut] if split == "calibration" else text[cut:]


def _tokenizer_key(tokenizer: Any) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


def _encode(tokenizer: Any, text: str) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # no "sequence longer than the model" warning, no special tokens
        return list(backend.encode(text, add_special_tokens=False).ids)
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


_CACHE: OrderedDict[tuple[str, str, str, int, int], list[int]] = OrderedDict()
_CACHE_SIZE = 8


def corpus_ids(tokenizer: Any, path: Path, split: Split) -> list[int]:
    """Token ids of one split of the corpus (cached per tokenizer content and file state)."""
    path = Path(path)
    key = _tokenizer_key(tokenizer)
    if key is None:
        return _encode(tokenizer, _split_text(path, split))
    stats = [p.stat() for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    stamp = (max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats))
    cache_key = (key, str(path.resolve()), split, *stamp)
    if cache_key in _CACHE:
        _CACHE.move_to_end(cache_key)
        return _CACHE[cache_key]
    ids = _encode(tokenizer, _split_text(path, split))
    _CACHE[cache_key] = ids
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ids


def token_windows(
    tokenizer: Any,
    path: Path,
    *,
    split: Split,
    seq_len: int,
    max_windows: int,
    seed: int,
) -> Any:
    """A `torch.LongTensor [n, seq_len]` of non-overlapping windows, n <= max_windows.

    When the split holds more windows than asked for, a seeded random subset is taken (in
    that random order); otherwise every window in corpus order.
    """
    import torch

    if seq_len < 2 or max_windows < 1:
        raise ValueError(f"need seq_len >= 2 and max_windows >= 1, got {seq_len}, {max_windows}")
    ids = corpus_ids(tokenizer, path, split)
    available = len(ids) // seq_len
    if available == 0:
        raise ExecutorError(
            f"the {split} split of {path} has {len(ids)} tokens: not one window of {seq_len}"
        )
    table = torch.tensor(ids[: available * seq_len], dtype=torch.long).view(available, seq_len)
    if available <= max_windows:
        return table
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(available, generator=generator)[:max_windows]
    return table[order].contiguous()


def env_flag(name: str) -> bool:
    """True when the environment variable is set to a truthy value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
