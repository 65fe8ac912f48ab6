"""Benchmarks that run only on a data file the recipe points at: `mmlu`, `mmlu-pro`, `gsm8k`.

Their data sets ship with no package here, so a stage's entry must name a local `dataFile`
(JSON Lines, optionally gzipped, or one JSON array); it is read and hashed (SHA-256 of the raw
bytes) before any model is loaded, and the hash goes into the ledger. Fields of an entry:

- `dataFile` (required), `shotsFile` (optional: where few-shot examples come from);
- `subset`: mmlu/mmlu-pro: subjects, comma-separated (the rows' `subject` or `category`);
  gsm8k: problem numbers and ranges ("0-9,12"), in file order;
- `limit`: the first N problems of those;
- `nShot`: examples put before each question. They come from `shotsFile` when given, else from
  the data file itself: the first N rows (of the same subject for mmlu), which are then not
  scored. Either way the ledger lists the example ids;
- `maxNewTokens` (gsm8k only; default 256).

mmlu.py and gsm8k.py hold the prompts and the scoring; this module reads the entry, the rows and
the shots, and says what the ledger records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError

MULTIPLE_CHOICE = frozenset({"mmlu", "mmlu-pro"})
GSM8K = "gsm8k"
DATA_FILE_BENCHMARKS = MULTIPLE_CHOICE | {GSM8K}
DEFAULT_GSM8K_NEW_TOKENS = 256
MAX_DATA_FILE_BYTES = 512 * 1024 * 1024  # a data file bigger than this is not a benchmark


@dataclass(frozen=True)
class DataFile:
    """The rows of a local data file, where it is and the hash of its bytes."""

    rows: list[dict[str, Any]]
    path: Path
    sha256: str

    def record(self, name: str) -> dict[str, Any]:
        """The data set as the ledger records it."""
        return {"name": name, "source": "local file", "file": self.path.name,
                "sha256": self.sha256, "size": len(self.rows)}


def read_data_file(path: Path, benchmark: str) -> DataFile:
    """JSON Lines (`.jsonl`, `.jsonl.gz`) or a JSON array (`.json`) of objects, hashed as read.
    ExecutorError names the file and the line of anything unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_DATA_FILE_BYTES:
            raise ExecutorError(f"{benchmark} dataFile {path}: {size} bytes, more than the "
                                f"{MAX_DATA_FILE_BYTES} a data file may have")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ExecutorError(f"{benchmark}: its data file {path} does not exist") from None
    except OSError as e:
        raise ExecutorError(f"{benchmark}: cannot read its data file {path}: "
                            f"{e.strerror}") from None
    try:
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ExecutorError(f"{benchmark} dataFile {path}: not UTF-8 text"
                            f"{' (or not gzip)' if path.suffix == '.gz' else ''}: {e}") from None
    rows = _json_rows(text, path, benchmark)
    if not rows:
        raise ExecutorError(f"{benchmark} dataFile {path}: no rows")
    return DataFile(rows, path, "sha256:" + hashlib.sha256(raw).hexdigest())


def _json_rows(text: str, path: Path, benchmark: str) -> list[dict[str, Any]]:
    where = f"{benchmark} dataFile {path}"
    if path.name.removesuffix(".gz").endswith(".json"):
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ExecutorError(f"{where}: not JSON: {e}") from None
        if not isinstance(parsed, list):
            raise ExecutorError(f"{where}: a .json data file must hold an array of objects")
        lines = list(enumerate(parsed, start=1))
    else:
        lines = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    lines.append((number, json.loads(line)))
                except (json.JSONDecodeError, RecursionError) as e:
                    raise ExecutorError(f"{where}, line {number}: not JSON: {e}") from None
    for number, row in lines:
        if not isinstance(row, dict):
            raise ExecutorError(f"{where}, row {number}: an object is required, got "
                                f"{type(row).__name__}")
    return [row for _, row in lines]


@dataclass(frozen=True)
class DataSettings:
    """What an entry asks of a data-file benchmark, besides the data."""

    data_file: Path
    shots_file: Path | None
    subset: str | None
    limit: int | None
    n_shot: int
    max_new_tokens: int

    @classmethod
    def from_def(cls, name: str, entry: Mapping[str, Any]) -> DataSettings:
        data_file = entry.get("dataFile")
        if not isinstance(data_file, str) or not data_file.strip():
            raise ExecutorError(f"benchmark {name!r} cannot run on this machine without a data "
                                "file: its data set is not installed here; give its entry a "
                                "dataFile (a local JSON Lines file)")
        unsupported = sorted({"gguf", "samples", "k"} & set(entry))
        if unsupported:
            raise ExecutorError(f"{name}: {', '.join(unsupported)} apply to humaneval only "
                                f"(this runner is greedy, through transformers)")
        shots = entry.get("shotsFile")
        if shots is not None and (not isinstance(shots, str) or not shots.strip()):
            raise ExecutorError(f"{name} shotsFile must be a path, got {shots!r}")
        return cls(data_file=Path(data_file), shots_file=Path(shots) if shots else None,
                   subset=str(entry["subset"]) if entry.get("subset") else None,
                   limit=_count(name, entry, "limit", None, 1),
                   n_shot=_count(name, entry, "nShot", 0, 0) or 0,
                   max_new_tokens=_count(name, entry, "maxNewTokens",
                                         DEFAULT_GSM8K_NEW_TOKENS, 1)
                   or DEFAULT_GSM8K_NEW_TOKENS)


def _count(name: str, entry: Mapping[str, Any], key: str, default: int | None,
           low: int) -> int | None:
    from foundry.executors.real.humaneval_run import entry_int

    return entry_int(entry, key, default, low, benchmark=name)


@dataclass(frozen=True)
class Problem:
    """One scored question, as mmlu.py or gsm8k.py parsed it from a row."""

    task_id: str
    group: str  # the subject for mmlu; "" for gsm8k
    question: str
    choices: tuple[str, ...]  # empty for gsm8k
    answer: str  # the correct letter (mmlu) or the final number (gsm8k)
    solution: str = ""  # gsm8k: the worked answer, shown when the problem is an example


Parse = Callable[[str, int, Mapping[str, Any], Path], Problem]


@dataclass(frozen=True)
class DataPlan:
    """One data-file benchmark of a stage, read and checked before any model is loaded."""

    name: str
    data: DataFile
    settings: DataSettings
    problems: list[Problem]
    shots: dict[str, list[Problem]]  # group -> examples ("" for gsm8k)
    shots_sha256: str | None  # the shotsFile's hash, when the examples came from one

    @property
    def shot_ids(self) -> list[str]:
        return [p.task_id for group in sorted(self.shots) for p in self.shots[group]]

    def dataset_record(self) -> dict[str, Any]:
        record = self.data.record(self.name)
        if self.shots_sha256 is not None and self.settings.shots_file is not None:
            record["shotsFile"] = self.settings.shots_file.name
            record["shotsSha256"] = self.shots_sha256
        return record


def plan_data_benchmark(name: str, entry: Mapping[str, Any], parse: Parse) -> DataPlan:
    """Read the entry's data (and shots) file, choose the problems and the examples."""
    settings = DataSettings.from_def(name, entry)
    data = read_data_file(settings.data_file, name)
    problems = [parse(name, i, row, data.path) for i, row in enumerate(data.rows)]
    shots_sha = None
    if settings.shots_file is not None:
        shot_data = read_data_file(settings.shots_file, name)
        shots_sha = shot_data.sha256
        pool = [parse(name, i, row, shot_data.path) for i, row in enumerate(shot_data.rows)]
        shots = _first_per_group(pool, settings.n_shot)
    else:
        shots = _first_per_group(problems, settings.n_shot)
        used = {p.task_id for group in shots.values() for p in group}
        problems = [p for p in problems if p.task_id not in used]
    problems = _select(name, problems, settings, numbered=name not in MULTIPLE_CHOICE)
    if not problems:
        raise ExecutorError(f"{name}: no problem is left to score in {data.path} (subset "
                            f"{settings.subset!r}, limit {settings.limit}, nShot "
                            f"{settings.n_shot} taken from the file)")
    short = sorted({p.group for p in problems if len(shots.get(p.group, [])) < settings.n_shot})
    if settings.n_shot and short:
        raise ExecutorError(f"{name}: nShot {settings.n_shot} needs that many examples per "
                            f"subject; too few for {short[:5]}")
    return DataPlan(name, data, settings, problems, shots, shots_sha)


def _first_per_group(pool: Sequence[Problem], n: int) -> dict[str, list[Problem]]:
    shots: dict[str, list[Problem]] = {}
    if n:
        for p in pool:
            group = shots.setdefault(p.group, [])
            if len(group) < n:
                group.append(p)
    return shots


def _select(name: str, problems: list[Problem], settings: DataSettings, *,
            numbered: bool) -> list[Problem]:
    chosen = problems
    if settings.subset:
        wanted = [s.strip() for s in settings.subset.split(",") if s.strip()]
        if numbered:
            from foundry.executors.real.humaneval import problem_numbers

            try:
                indices = {f"{name}/{n}" for part in wanted for n in problem_numbers(part)}
            except ValueError:
                raise ExecutorError(f"{name} subset: {settings.subset!r} is not problem numbers "
                                    "and ranges such as 0-9,12") from None
            chosen = [p for p in problems if p.task_id in indices]
        else:
            groups = {p.group for p in problems}
            unknown = sorted(set(wanted) - groups)
            if unknown:
                raise ExecutorError(f"{name} subset names subjects the data file does not "
                                    f"have: {unknown[:5]} (it has {sorted(groups)[:10]})")
            chosen = [p for p in problems if p.group in wanted]
    if settings.limit is not None:
        chosen = chosen[: settings.limit]
    return chosen


@dataclass(frozen=True)
class DataScore:
    """Accuracy over the problems, the per-problem rows (the samples file), the wall time."""

    score: float
    correct: int
    rows: list[dict[str, Any]]
    wall_seconds: float


@dataclass(frozen=True)
class Runner:
    """What one data-file benchmark is: how a row becomes a problem, how a model is scored on
    the plan, and what its ledger records (metric, prompt template, sampling)."""

    parse: Parse
    run: Callable[[Any, Any, DataPlan], DataScore]  # (model, tokenizer, plan)
    metric: str
    prompt_template: str
    sampling: Callable[[DataSettings], dict[str, Any]]
