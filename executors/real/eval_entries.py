"""What the eval stage asked for (Plan), and the results.benchmarks entries it reports, each
with its ledger (eval_ledger.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.executors.corpus import corpus_hash
from foundry.executors.real.code_mini import (
    BOUNDARY_PATTERN,
    CODE_MAX_NEW_TOKENS,
    CODE_TIMEOUT_S,
    PROBLEMS_FILE,
    CodeScore,
    problems_file_hash,
    write_jsonl,
)
from foundry.executors.real.data_benchmarks import (
    DATA_FILE_BENCHMARKS,
    MULTIPLE_CHOICE,
    DataPlan,
    DataScore,
    Runner,
    plan_data_benchmark,
)
from foundry.executors.real.eval_ledger import make_ledger, runtime_of, sha256_text
from foundry.executors.real.humaneval import PROMPT_TEMPLATE, DataSet, load_dataset, select
from foundry.executors.real.humaneval_run import HumanEvalScore, Settings, dataset_record
from foundry.executors.real.sandbox import containment

CODE, HUMAN = "foundry-code-mini", "humaneval"


@dataclass(frozen=True)
class HumanEvalPlan:
    data: DataSet
    problems: list[dict[str, Any]]
    settings: Settings
    subset_label: str | None


@dataclass(frozen=True)
class Plan:
    """The stage's benchmarks, read and checked before any model is loaded."""

    names: list[str]
    defs: Mapping[str, Mapping[str, Any]]
    compare: bool
    human: HumanEvalPlan | None
    data: tuple[DataPlan, ...] = ()

    def samples_name(self, name: str, *, base: bool) -> str:
        key = "baseSamplesPath" if base else "samplesPath"
        given = self.defs.get(name, {}).get(key)
        return Path(str(given)).name if given else f"{name}{'-base' if base else ''}.jsonl"


def plan_of(stage: Mapping[str, Any], names: list[str]) -> Plan:
    defs = {str(b.get("name")): b for b in stage.get("benchmarks") or []
            if isinstance(b, Mapping)}
    human = None
    if HUMAN in names:
        entry = defs.get(HUMAN, {})
        settings = Settings.from_def(entry)
        data_file = entry.get("dataFile")
        data = load_dataset(Path(str(data_file)) if data_file else None)
        problems = select(data.problems, settings.subset, settings.limit)
        label = settings.subset or (f"first {settings.limit}" if settings.limit else None)
        human = HumanEvalPlan(data, problems, settings, label)
    data_plans = tuple(_data_plan(name, defs.get(name, {})) for name in names
                       if name in DATA_FILE_BENCHMARKS)
    return Plan(names, defs, bool(stage.get("compareToBase", True)), human, data_plans)


def runner_for(name: str) -> Runner:
    """mmlu.py's runner for mmlu and mmlu-pro, gsm8k.py's for gsm8k."""
    if name in MULTIPLE_CHOICE:
        from foundry.executors.real.mmlu import RUNNER
    else:
        from foundry.executors.real.gsm8k import RUNNER
    return RUNNER


def _data_plan(name: str, entry: Mapping[str, Any]) -> DataPlan:
    return plan_data_benchmark(name, entry, runner_for(name).parse)


@dataclass(frozen=True)
class Measured:
    """One model's measurements under this stage's harnesses."""

    identity: dict[str, str]
    sums: list[float]
    ppl_seconds: float
    code: CodeScore | None
    human: HumanEvalScore | None
    completions: list[str]
    data: Mapping[str, DataScore] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What every ledger of one eval stage shares."""

    seed: int
    device: str
    corpus: Path
    windows: Any
    seq_len: int


def _base_part(m: Measured, seconds: float, samples_hash: str) -> dict[str, Any]:
    return {"model": m.identity, "wallSeconds": seconds, "samplesHash": samples_hash}


def perplexity_entry(c: Context, final: Measured, base: Measured, final_ppl: float,
                     base_ppl: float, path: Path, digest: str) -> dict[str, Any]:
    windows_hash = "sha256:" + hashlib.sha256(c.windows.numpy().tobytes()).hexdigest()
    ledger = make_ledger(
        harness="perplexity",
        dataset={"name": c.corpus.name, "sha256": corpus_hash(c.corpus), "split": "heldout",
                 "windowsHash": windows_hash},
        task_ids=[f"window/{i}" for i in range(len(final.sums))],
        prompt_template="", sampling={"seqLen": c.seq_len, "teacherForced": True},
        seed=c.seed, model=final.identity, device=c.device, wall_seconds=final.ppl_seconds,
        samples_hash=digest, base=_base_part(base, base.ppl_seconds, digest))
    return {"name": "perplexity", "metric": "perplexity", "score": round(final_ppl, 4),
            "baseScore": round(base_ppl, 4), "delta": round(final_ppl - base_ppl, 4),
            "samplesPath": path.name, "resultHash": digest,
            "metrics": {"windows": len(final.sums), "seqLen": c.seq_len}, "ledger": ledger}


def code_entry(c: Context, final: Measured, base: Measured, files: list[Path]
               ) -> dict[str, Any]:
    code, base_code = final.code, base.code
    assert code is not None
    ledger = make_ledger(
        harness=CODE, dataset={"name": CODE, "file": PROBLEMS_FILE.name,
                               "sha256": problems_file_hash()},
        task_ids=code.task_ids, prompt_template="{prompt}",
        sampling={"greedy": True, "maxNewTokens": CODE_MAX_NEW_TOKENS,
                  "stop": BOUNDARY_PATTERN, "timeoutS": CODE_TIMEOUT_S},
        seed=c.seed, model=final.identity, device=c.device, wall_seconds=code.wall_seconds,
        samples_hash=code.result_hash,
        base=_base_part(base, base_code.wall_seconds, base_code.result_hash)
        if base_code else None)
    entry: dict[str, Any] = {
        "name": CODE, "metric": "pass@1", "score": code.score, "samplesPath": code.path.name,
        "resultHash": code.result_hash, "ledger": ledger,
        "metrics": {"problems": len(code.completions), "containment": containment()},
    }
    files.append(code.path)
    if base_code is not None:
        entry.update(baseScore=base_code.score, delta=round(code.score - base_code.score, 6),
                     baseSamplesPath=base_code.path.name, baseResultHash=base_code.result_hash)
        files.append(base_code.path)
    return entry


def humaneval_entry(c: Context, plan: Plan, final: Measured, base: Measured,
                    files: list[Path]) -> dict[str, Any]:
    he, score, base_score = plan.human, final.human, base.human
    assert he is not None
    assert score is not None
    path = Path(files[0]).parent / plan.samples_name(HUMAN, base=False)
    digest = write_jsonl(path, score.rows)
    files.append(path)
    base_info = None
    if base_score is not None:
        base_path = path.parent / plan.samples_name(HUMAN, base=True)
        base_digest = write_jsonl(base_path, base_score.rows)
        files.append(base_path)
        base_info = _base_part(base, base_score.wall_seconds, base_digest)
    ledger = make_ledger(
        harness=HUMAN, dataset=dataset_record(he.data),
        task_ids=[str(p["task_id"]) for p in he.problems], prompt_template=PROMPT_TEMPLATE,
        sampling=he.settings.sampling(), seed=c.seed, model=score.model or final.identity,
        device=c.device, wall_seconds=score.wall_seconds, samples_hash=digest, base=base_info)
    # Which runtime completed the prompts: the forged model's GGUF tier through llama.cpp
    # (`gguf` in the entry) or its safetensors through transformers, like the base. Not part
    # of ledgerKey: what is compared is the model as deployed.
    ledger["runtime"] = score.runtime or runtime_of("transformers")
    if score.model is not None:
        ledger["modelFile"] = score.model.get("file")
    if base_info is not None:
        ledger["baseRuntime"] = runtime_of("transformers")
    p1 = score.scores[1]
    entry: dict[str, Any] = {
        "name": HUMAN, "metric": "pass@1", "score": p1, "samplesPath": path.name,
        "resultHash": digest, "ledger": ledger,
        "metrics": {"problems": len(he.problems), "samplesPerProblem": he.settings.samples,
                    "passAtK": {f"pass@{k}": v for k, v in score.scores.items()},
                    "unjudged": score.unjudged, "containment": containment()},
    }
    if he.subset_label:
        entry["subset"] = he.subset_label
    if base_score is not None and base_info is not None:
        b1 = base_score.scores[1]
        entry.update(baseScore=b1, baseSamplesPath=Path(files[-1]).name,
                     baseResultHash=base_info["samplesHash"],
                     **({"delta": round(p1 - b1, 6)} if p1 is not None and b1 is not None
                        else {}))
        entry["metrics"]["basePassAtK"] = {f"pass@{k}": v for k, v in base_score.scores.items()}
    return entry


def data_entry(c: Context, plan: Plan, data: DataPlan, final: Measured, base: Measured,
               files: list[Path]) -> dict[str, Any]:
    """The entry of a data-file benchmark (mmlu, mmlu-pro, gsm8k): accuracy, its ledger."""
    score, base_score = final.data[data.name], base.data.get(data.name)
    path = Path(files[0]).parent / plan.samples_name(data.name, base=False)
    digest = write_jsonl(path, score.rows)
    files.append(path)
    base_info = None
    if base_score is not None:
        base_path = path.parent / plan.samples_name(data.name, base=True)
        files.append(base_path)
        base_info = _base_part(base, base_score.wall_seconds,
                               write_jsonl(base_path, base_score.rows))
    runner = runner_for(data.name)
    sampling = runner.sampling(data.settings)
    sampling.update(nShot=data.settings.n_shot,
                    shotIdsHash=sha256_text("\n".join(data.shot_ids)) if data.shot_ids else None)
    ledger = make_ledger(
        harness=data.name, dataset=data.dataset_record(),
        task_ids=[p.task_id for p in data.problems], prompt_template=runner.prompt_template,
        sampling=sampling, seed=c.seed, model=final.identity, device=c.device,
        wall_seconds=score.wall_seconds, samples_hash=digest, base=base_info)
    ledger["runtime"] = runtime_of("transformers")
    if data.shot_ids:
        ledger["shotIds"] = data.shot_ids
    entry: dict[str, Any] = {
        "name": data.name, "metric": runner.metric, "score": score.score, "samplesPath": path.name,
        "resultHash": digest, "ledger": ledger,
        "metrics": {"problems": len(data.problems), "correct": score.correct},
    }
    if data.settings.subset or data.settings.limit:
        entry["subset"] = data.settings.subset or f"first {data.settings.limit}"
    if data.settings.n_shot:
        entry["nShot"] = data.settings.n_shot
    if base_score is not None and base_info is not None:
        entry.update(baseScore=base_score.score, baseSamplesPath=Path(files[-1]).name,
                     baseResultHash=base_info["samplesHash"],
                     delta=round(score.score - base_score.score, 6))
        entry["metrics"]["baseCorrect"] = base_score.correct
    return entry
