"""Scale-model rehearsal: the recipe a rehearsal run forges instead of the one it rehearses.

`rehearsal_recipe(recipe, ...)` returns a copy of the recipe whose source is a *scale model* of
its base (executors/scale_models.py: same class, layer pattern, head/KV/expert counts and
tokenizer, small widths, random weights), whose step counts are capped, whose corpora not on
this machine are replaced by a stand-in, and whose stages a real run would refuse are passed
over. Everything changed is written into the copy's `rehearsal` field, so it is in the run's
Requested event, in its recipe hash and in the sealed artifact: a rehearsal says exactly what
it did not do. That field is also what makes the artifact unpublishable (ForgeRun).

The run itself is an ordinary run: the same orchestrator, executors, blob store and events.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from foundry.domain.errors import InvalidInputError
from foundry.executors.registry import ExecutorRegistry, names_data_file

# Per stage type: field -> (cap, the executor's default when the field is absent). The caps
# keep every stage doing real work (a real optimizer step, a real scoring pass) in seconds.
STEP_CAPS: dict[str, dict[str, tuple[int, int | None]]] = {
    "train": {"steps": (2, None), "batchSize": (1, 4), "gradientAccumulation": (1, 1),
              "sequenceLength": (128, 2048)},
    "lora": {"epochs": (1, 3), "batchSize": (1, 4)},
    "context-extend": {"trainingSteps": (1, None)},
    "prune": {"analysisSteps": (2, 200)},
    "expert-prune": {"profileSteps": (2, 100)},
    "expert-activation-profile": {"maxLength": (128, 2048)},
    "compensation-lora": {"steps": (2, 500)},
}
# Per benchmark: field -> cap. HumanEval over all 164 problems at 512 new tokens takes minutes
# on a scale model; two problems at 32 tokens still load the data set, generate, and judge in
# the sandbox. The same holds for gsm8k and mmlu given a dataFile (thousands of rows each).
BENCHMARK_CAPS: dict[str, dict[str, int]] = {
    "humaneval": {"limit": 2, "maxNewTokens": 32}, "gsm8k": {"limit": 2, "maxNewTokens": 32},
    "mmlu": {"limit": 4}, "mmlu-pro": {"limit": 4}}
MAX_CYCLES = 3
NEVER_PUBLISHED = "a rehearsal is never published: its artifact forges a scale model"
STAND_IN_CORPUS = "foundry stand-in corpus (CPython standard-library text, 16 KB)"
STAND_IN_BYTES = 14_000, 3_000  # train.txt, valid.txt: a few windows of every stage's length
# The real tokenizer of each family that has one offline (executors/real/known_tokenizers).
FAMILY_TOKENIZERS = {"qwen3_5": "qwen3_5", "qwen3_5_moe": "qwen3_5", "qwen3": "qwen3",
                     "qwen3_moe": "qwen3"}
STAND_IN_TOKENIZER = "smollm2"


def _tokenizer_for(family: str) -> tuple[str, bool]:
    """(known tokenizer name, whether it is the family's real one)."""
    if family in FAMILY_TOKENIZERS:
        return FAMILY_TOKENIZERS[family], True
    return STAND_IN_TOKENIZER, False


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def build_scale_source(base: dict[str, Any], family: str, models_dir: Path) -> tuple[Path, Any]:
    """The scale model's directory (built once per config and tokenizer, then reused) and a
    description of it for the rehearsal record."""
    from foundry.executors.real.known_tokenizers import load_tokenizer, tokenizer_dir
    from foundry.executors.scale_models import Widths, build_scale_model, scale_config_dict

    widths = Widths()
    name, real = _tokenizer_for(family)
    tok_dir = tokenizer_dir(name)
    key = _digest({"base": base, "widths": widths.__dict__, "tokenizer": tok_dir.name,
                   "format": 1})[:20]
    target = models_dir / f"{family}-{key}"
    if not (target / "config.json").is_file():
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=".building-"))
        try:
            build_scale_model(base, staging, tokenizer=load_tokenizer(name), widths=widths)
            try:
                staging.rename(target)
            except OSError:  # another process built the same twin first
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    twin = json.loads((target / "config.json").read_text(encoding="utf-8"))
    scaled = scale_config_dict(base)
    described = {
        "architecture": twin.get("architectures"), "modelType": twin.get("model_type"),
        "kept": {k: twin.get(k) for k in (
            "layer_types", "num_attention_heads", "num_key_value_heads", "linear_num_key_heads",
            "linear_num_value_heads", "num_experts", "num_local_experts", "num_experts_per_tok",
            "partial_rotary_factor", "vocab_size") if twin.get(k) is not None},
        "layers": {"base": base.get("num_hidden_layers"), "scale": twin.get("num_hidden_layers")},
        "widths": {"hidden": scaled.get("hidden_size"), "headDim": scaled.get("head_dim"),
                   "intermediate": scaled.get("intermediate_size"),
                   "moeIntermediate": scaled.get("moe_intermediate_size")},
        "weights": "random, seed 0, float32",
        "tokenizer": {"name": name, "real": real, "vocabSize": twin.get("vocab_size"),
                      **({} if real else {"why": f"no offline tokenizer for {family}: "
                                                 f"{name}'s stands in"})},
        "directory": target.name,
    }
    return target, described


def stand_in_corpus(cache_dir: Path) -> dict[str, Any]:
    """The stand-in corpus's `calibrationCorpus` reference (a slice of the stdlib corpus)."""
    from foundry.executors.corpus import build_stdlib_corpus, corpus_ref

    target = cache_dir / "stand-in-corpus"
    if not (target / "valid.txt").is_file():
        full = cache_dir / "stdlib-corpus"
        if not (full / "valid.txt").is_file():
            build_stdlib_corpus(full)
        staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".corpus-"))
        try:
            for name, size in zip(("train.txt", "valid.txt"), STAND_IN_BYTES, strict=True):
                text = (full / name).read_text(encoding="utf-8")[:size]
                (staging / name).write_text(text, encoding="utf-8")
            try:
                staging.rename(target)
            except OSError:
                if not (target / "valid.txt").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return corpus_ref(target, STAND_IN_CORPUS)


def _corpus_on_machine(recipe: dict[str, Any]) -> bool:
    from foundry.executors.real.data import resolve_corpus

    if not recipe.get("calibrationCorpus"):
        return False
    try:
        resolve_corpus(recipe)
    except Exception:  # not found, wrong hash, not cached: a stand-in takes its place
        return False
    return True


def _cap_stage(index: int, stage: dict[str, Any], caps: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(stage)
    for field, (cap, default) in STEP_CAPS.get(str(stage["type"]), {}).items():
        value = stage.get(field, default)
        if value is None or int(value) > cap:
            out[field] = cap
            caps.append({"index": index, "type": stage["type"], "field": field,
                         "from": value, "to": cap})
    return out


def cap_benchmarks(entries: list[Any], where: str, caps: list[dict[str, Any]]) -> list[Any]:
    """Each benchmark entry with BENCHMARK_CAPS applied (a bare name becomes an object);
    every change is recorded in `caps` with where it was, the entry named by its benchmark
    (a position could be the recipe's or the one left after unknown benchmarks are dropped)."""
    out: list[Any] = []
    for entry in entries:
        name = str(entry.get("name") if isinstance(entry, dict) else entry)
        limits = BENCHMARK_CAPS.get(name)
        if not limits:
            out.append(entry)
            continue
        capped = dict(entry) if isinstance(entry, dict) else {"name": name}
        for field, cap in limits.items():
            value = capped.get(field)
            if not isinstance(value, int) or isinstance(value, bool) or value > cap:
                capped[field] = cap
                caps.append({"field": f"{where}[{name}].{field}", "type": name,
                             "from": value, "to": cap})
        out.append(capped)
    return out


def _runnable_benchmarks(entries: list[Any], registry: ExecutorRegistry, where: str,
                         stand_ins: list[dict[str, Any]]) -> list[Any]:
    """The entries this worker's eval runs: known ones, and data-file ones (mmlu, gsm8k)
    whose entry names a dataFile. The rest are stood in for, each with why."""
    def name(b: Any) -> str:
        return str(b.get("name") if isinstance(b, dict) else b)

    kept = [b for b in entries if name(b) in registry.known_benchmarks
            or (name(b) in registry.data_file_benchmarks and names_data_file(b))]
    dropped = [b for b in entries if b not in kept]
    unknown = [name(b) for b in dropped if name(b) not in registry.data_file_benchmarks]
    no_file = [name(b) for b in dropped if name(b) in registry.data_file_benchmarks]
    by = "perplexity on the calibration corpus's held-out split"
    if unknown:
        stand_ins.append({"kind": "benchmarks", "where": where, "replaced": unknown, "by": by,
                          "why": "not known to this worker's eval executor; a real run "
                                 "refuses them up front"})
    if no_file:
        stand_ins.append({"kind": "benchmarks", "where": where, "replaced": no_file, "by": by,
                          "why": "their data sets are not installed here and the entry names "
                                 "no dataFile; a real run refuses them up front"})
    return kept or [{"name": "perplexity"}]


def _producible_tiers(tiers: list[Any], registry: ExecutorRegistry,
                      passed_over: list[dict[str, Any]]) -> list[Any]:
    """The quantTiers this worker can write (their implied quant step runs); each one a real
    run refuses up front is passed over with the reason."""
    kept = []
    for index, tier in enumerate(tiers):
        problems = registry.unproducible_tiers([tier])
        if problems:
            passed_over.append({"index": None, "field": f"quantTiers[{index}]",
                                "type": "quantTiers", "reason": "; ".join(problems)})
        else:
            kept.append(tier)
    return kept


def _rehearsed_stages(recipe: dict[str, Any], registry: ExecutorRegistry,
                      caps: list[dict[str, Any]], passed_over: list[dict[str, Any]],
                      stand_ins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipe's stages as a rehearsal runs them: capped, or passed over with the reason
    (publishing, and the types this worker refuses); eval keeps the benchmarks it can run."""
    stages: list[dict[str, Any]] = []
    executable = registry.executable_types()
    for index, stage in enumerate(recipe.get("stages") or []):
        kind = str(stage.get("type"))
        if kind in ("publish", "deliver"):
            passed_over.append({"index": index, "type": kind, "reason": NEVER_PUBLISHED})
        elif kind not in executable:
            passed_over.append({"index": index, "type": kind,
                                "reason": registry.why_unexecutable(kind)})
        else:
            capped = _cap_stage(index, stage, caps)
            if kind == "eval":
                where = f"stages[{index}].benchmarks"
                capped["benchmarks"] = cap_benchmarks(_runnable_benchmarks(
                    list(stage.get("benchmarks") or []), registry,
                    where, stand_ins), where, caps)
            stages.append(capped)
    if not stages:
        raise InvalidInputError("stages", "nothing to rehearse: every stage is passed over ("
                                + "; ".join(f"{p['type']}: {p['reason']}" for p in passed_over)
                                + ")")
    return stages


def _stand_in_data(recipe: dict[str, Any], out: dict[str, Any], cache_dir: Path,
                   stand_ins: list[dict[str, Any]]) -> None:
    """A corpus that is not on this machine, and the data sets the stages name, are stood in
    for by a small corpus built here; each replacement is recorded."""
    datasets = sorted({str(s[f]) for s in out["stages"] for f in ("dataset", "trainingDataset")
                       if s.get(f)})
    if not _corpus_on_machine(recipe):
        original = recipe.get("calibrationCorpus")
        out["calibrationCorpus"] = stand_in_corpus(cache_dir)
        stand_ins.append({"kind": "calibrationCorpus", "replaced": original,
                          "by": STAND_IN_CORPUS,
                          "why": "none named" if not original else "not on this machine"})
    if datasets:
        stand_ins.append({"kind": "datasets", "replaced": datasets,
                          "by": out["calibrationCorpus"].get("name"),
                          "why": "the executors train on the calibration corpus; these data "
                                 "sets are not fetched (a real run needs them)"})


def rehearsal_recipe(recipe: dict[str, Any], registry: ExecutorRegistry, cache_dir: Path, *,
                     hardware_node: str) -> dict[str, Any]:
    """The recipe a rehearsal of `recipe` forges, with everything it changed recorded."""
    from foundry.domain.hashing import content_hash
    from foundry.executors.architectures import UnsupportedArchitectureError
    from foundry.executors.real.rehearsal_projection import project
    from foundry.executors.scale_models import architecture_of, base_config_for

    source = dict(recipe.get("source") or {})
    try:
        base, config_from = base_config_for(source)
        family = architecture_of(base).family
    except UnsupportedArchitectureError as e:
        raise InvalidInputError("source.architecture", str(e)) from None
    model_dir, scale = build_scale_source(base, family, cache_dir / "scale-models")
    out = copy.deepcopy(recipe)
    out["source"] = {**source, "baseModel": str(model_dir)}
    caps: list[dict[str, Any]] = []
    passed_over: list[dict[str, Any]] = []
    stand_ins: list[dict[str, Any]] = []
    out["stages"] = _rehearsed_stages(recipe, registry, caps, passed_over, stand_ins)
    if out.get("quantTiers"):
        out["quantTiers"] = _producible_tiers(list(out["quantTiers"]), registry, passed_over)
    if out.get("evaluationBenchmarks"):
        out["evaluationBenchmarks"] = cap_benchmarks(_runnable_benchmarks(
            list(out["evaluationBenchmarks"]), registry,
            "evaluationBenchmarks", stand_ins), "evaluationBenchmarks", caps)
    cycles = int(recipe.get("cycles") or 1)
    if cycles > MAX_CYCLES:
        out["cycles"] = MAX_CYCLES
        caps.append({"field": "cycles", "from": cycles, "to": MAX_CYCLES})
    _stand_in_data(recipe, out, cache_dir, stand_ins)
    out["rehearsal"] = {
        "of": {"recipeId": recipe.get("id"), "name": recipe.get("name"),
               "version": recipe.get("version"),
               "recipeHash": content_hash({k: v for k, v in recipe.items() if k != "id"}),
               "baseModel": source.get("baseModel")},
        "publishable": False,
        "scaleModel": {**scale, "baseConfigFrom": config_from},
        "stepCaps": caps,
        "standIns": stand_ins,
        "passedOver": passed_over,
        "projection": project(base, config_from, recipe, hardware_node),
    }
    return out
