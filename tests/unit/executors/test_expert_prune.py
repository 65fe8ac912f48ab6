"""expert-prune on a real, tiny Qwen3-MoE model: exact slicing, alignment, refusals, reuse.

The model is a random-initialised `Qwen3MoeForCausalLM` (16 experts, top-2, normalised top-k
weights as the released Qwen3-MoE checkpoints have them). Nothing is mocked: the profile is
taken by hooks on the model, the prune slices its tensors, the result is reloaded by
transformers, and a stored profile is found by hash in a real `BlobStore`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from foundry.adapters.store.blobs import BlobStore
from foundry.executors.architectures import FAMILIES
from foundry.executors.base import StageContext, StageResult
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from foundry.executors.errors import ExecutorError
from foundry.executors.real.activation_profile import (
    PROFILE_FILE,
    ExpertActivationProfileExecutor,
    profile_hash,
    profile_model,
    write_profile,
)
from foundry.executors.real.expert_prune import ExpertPruneExecutor, choose, slice_experts
from foundry.executors.tiny_model import train_bpe_tokenizer

pytestmark = pytest.mark.slow

ARCH = FAMILIES["qwen3_moe"]
EXPERTS, TOP_K = 16, 2


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def progress(self, fraction: float, message: str = "",
                 metrics: Mapping[str, float] | None = None) -> None:
        self.calls.append((fraction, message))
        assert metrics is None or all(isinstance(v, float | int) for v in metrics.values())


def _config() -> Any:
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=1024, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=EXPERTS, num_experts_per_tok=TOP_K, norm_topk_prob=True,
        max_position_embeddings=512, initializer_range=0.2,  # logits far from uniform
        architectures=["Qwen3MoeForCausalLM"])


def _model(seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(), dtype=torch.float32).eval()
    with torch.no_grad():  # a peaked router: routing decisions far from ties
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("expert-prune")
    corpus = build_stdlib_corpus(root / "corpus")
    tokenizer = train_bpe_tokenizer(corpus / "train.txt", 1024)
    model_dir = root / "model"
    _model().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return {"root": root, "model": model_dir, "tokenizer": tokenizer,
            "recipe": {"calibrationCorpus": corpus_ref(corpus, "stdlib-docstrings")}}


def run_stage(executor: Any, stage: dict[str, Any], shared: dict[str, Any], model: Path,
              where: Path, extras: Mapping[str, Any] | None = None) -> StageResult:
    where.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(run_id="t", cycle=1, index=0, stage=stage, recipe=shared["recipe"],
                       input_dir=model, output_dir=where / "out", work_dir=where / "work",
                       base_model_dir=model, extras=dict(extras or {}))
    (where / "work").mkdir(exist_ok=True)
    reporter = Recorder()
    result = executor.run(ctx, reporter)
    assert reporter.calls[-1][0] == 1.0
    json.dumps(dict(result.metrics))
    return result


def _logits(model: Any, ids: Any) -> Any:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _reload(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


IDS = torch.tensor([[5, 77, 301]])  # 3 tokens x top-2: at most 6 of 16 experts routed per layer


def test_removing_never_routed_experts_keeps_outputs_identical(
        shared: dict[str, Any], tmp_path: Path) -> None:
    model = _model()
    profile = profile_model(model, IDS)
    counts = {e["layer"]: e["experts"]["count"] for e in profile["layers"]}
    assert all(sum(c) == 3 * TOP_K for c in counts.values())  # the hooks saw every routing
    profile_file = tmp_path / "profile.json"
    write_profile(profile, profile_file)
    result = run_stage(ExpertPruneExecutor(),
                       {"type": "expert-prune", "keepExperts": 8, "metric": "activation_count",
                        "importanceJson": str(profile_file)},
                       shared, shared["model"], tmp_path / "prune")
    kept = result.metrics["keptExperts"]
    for layer, c in counts.items():  # every routed expert survived
        assert {e for e in range(EXPERTS) if c[e] > 0} <= set(kept[str(layer)])
    pruned = _reload(result.output_dir)
    assert pruned.config.num_experts == 8
    assert pruned.model.layers[0].mlp.experts.gate_up_proj.shape[0] == 8
    assert pruned.model.layers[0].mlp.gate.weight.shape == (8, 64)
    torch.testing.assert_close(_logits(pruned, IDS), _logits(model, IDS), rtol=0, atol=1e-5)
    # A token sequence that reaches a removed expert gives different outputs: the check bites.
    other = torch.randint(0, 1024, (1, 64), generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(_logits(pruned, other), _logits(model, other), atol=1e-4)
    assert result.metrics["expertsDropped"] == 16
    assert result.metrics["routerSlicedLayers"] == 2
    assert result.metrics["expertTensorLayout"] == "mlp-experts-fused"
    assert not (result.output_dir / PROFILE_FILE).exists()  # a stale profile is not passed on


def _permute(model: Any, layer: int, perm: Any, *, router: bool = True,
             experts: bool = True) -> None:
    mlp = model.model.layers[layer].mlp
    with torch.no_grad():
        if experts:
            mlp.experts.gate_up_proj.copy_(mlp.experts.gate_up_proj[perm].clone())
            mlp.experts.down_proj.copy_(mlp.experts.down_proj[perm].clone())
        if router:
            mlp.gate.weight.copy_(mlp.gate.weight[perm].clone())


def test_router_and_experts_stay_aligned_under_permutation() -> None:
    ids = torch.randint(0, 1024, (1, 32), generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(EXPERTS, generator=torch.Generator().manual_seed(4))
    keep = choose([float(e) for e in range(EXPERTS)], 8)  # experts 8..15 of the original
    original = _model()
    slice_experts(original, ARCH, {0: keep, 1: keep})
    expected = _logits(original, ids)

    permuted = _model()
    for layer in (0, 1):
        _permute(permuted, layer, perm)
    torch.testing.assert_close(_logits(permuted, ids), _logits(_model(), ids),
                               rtol=0, atol=1e-5)  # a joint permutation changes nothing
    inverse = torch.argsort(perm)
    keep_permuted = sorted(int(inverse[e]) for e in keep)  # where those experts went
    slice_experts(permuted, ARCH, {0: keep_permuted, 1: keep_permuted})
    torch.testing.assert_close(_logits(permuted, ids), expected, rtol=0, atol=1e-5)

    misaligned = _model()  # router rows moved without their experts: outputs change
    _permute(misaligned, 0, perm, experts=False)
    assert not torch.allclose(_logits(misaligned, ids), _logits(_model(), ids), atol=1e-4)


def test_a_prune_below_top_k_is_refused_naming_the_field(
        shared: dict[str, Any], tmp_path: Path) -> None:
    for stage, field in (({"keepExperts": 1}, "keepExperts"),
                         ({"prunePct": 95}, "prunePct")):
        with pytest.raises(ExecutorError, match="num_experts_per_tok") as err:
            run_stage(ExpertPruneExecutor(), {"type": "expert-prune", "metric": "random",
                                              **stage}, shared, shared["model"],
                      tmp_path / field)
        assert field in str(err.value)
    with pytest.raises(ExecutorError, match="prunePct is a percentage"):
        run_stage(ExpertPruneExecutor(), {"type": "expert-prune", "prunePct": 0.5},
                  shared, shared["model"], tmp_path / "fraction")
    with pytest.raises(ExecutorError, match="expertTensorLayout"):
        run_stage(ExpertPruneExecutor(),
                  {"type": "expert-prune", "keepExperts": 8,
                   "expertTensorLayout": "block_sparse_moe-unfused"},
                  shared, shared["model"], tmp_path / "layout")


def test_the_profile_blob_is_reused_by_hash(shared: dict[str, Any], tmp_path: Path) -> None:
    profiled = run_stage(ExpertActivationProfileExecutor(),
                         {"type": "expert-activation-profile",
                          "calibrationCorpus": "stdlib-docstrings", "maxLength": 128},
                         shared, shared["model"], tmp_path / "profile")
    digest = profiled.metrics["importanceOutput"]
    (profile_file,) = profiled.files
    assert digest == profile_hash(json.loads(profile_file.read_bytes()))
    blobs = BlobStore(tmp_path / "blobs")
    assert blobs.put_file(profile_file).sha256 == digest  # the run stores it under its hash
    extras = {"blobPath": blobs.path_of}

    by_hash = run_stage(ExpertPruneExecutor(),
                        {"type": "expert-prune", "prunePct": 50, "importanceJson": digest},
                        shared, shared["model"], tmp_path / "by-hash", extras)
    assert by_hash.metrics["importanceInput"] == digest
    assert not any("profiled here" in n for n in by_hash.notes)
    assert by_hash.metrics["metric"] == "reap"  # the default
    # The same profile carried by the profile stage's output model gives the same prune.
    carried = run_stage(ExpertPruneExecutor(), {"type": "expert-prune", "keepExperts": 8},
                        shared, profiled.output_dir, tmp_path / "carried")
    assert carried.metrics["keptExperts"] == by_hash.metrics["keptExperts"]
    assert carried.metrics["importanceInput"] == digest

    missing = "sha256:" + "0" * 64
    with pytest.raises(ExecutorError, match="no stored blob"):
        run_stage(ExpertPruneExecutor(),
                  {"type": "expert-prune", "keepExperts": 8, "importanceJson": missing},
                  shared, shared["model"], tmp_path / "missing", extras)
    blobs.path_of(digest).chmod(0o644)
    tampered = json.loads(profile_file.read_bytes())
    tampered["tokens"] += 1
    write_profile(tampered, blobs.path_of(digest))
    with pytest.raises(ExecutorError, match="hashes to"):
        run_stage(ExpertPruneExecutor(),
                  {"type": "expert-prune", "keepExperts": 8, "importanceJson": digest},
                  shared, shared["model"], tmp_path / "tampered", extras)


def test_profile_statistics_are_consistent(shared: dict[str, Any], tmp_path: Path) -> None:
    model = _model()
    ids = torch.randint(0, 1024, (4, 64), generator=torch.Generator().manual_seed(5))
    profile = profile_model(model, ids)
    layer = profile["layers"][0]["experts"]
    count, reap = layer["count"], layer["reap"]
    routed = [e for e in range(EXPERTS) if count[e]]
    for e in routed:  # REAP is the mean routed weight x output norm: bounded by the norm mean
        assert 0 < reap[e] <= layer["outputNormSum"][e] / count[e] + 1e-6
    assert sum(count) == 4 * 64 * TOP_K
    # normalised top-k: each token's weights sum to 1, so the weight sums add up to the tokens
    assert sum(layer["routerWeightSum"]) == pytest.approx(4 * 64, rel=1e-6)
