"""`compact` on real tiny models: dead units found and removed exactly, bands counted, and the
per-band mixed-precision GGUF written through llama.cpp's converter and quantizer, read back
and run by llama.cpp."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from foundry.executors.base import StageContext, StageResult
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from foundry.executors.errors import ExecutorError
from foundry.executors.real.compact import BANDS, CompactExecutor
from foundry.executors.real.expert_prune import ExpertPruneExecutor
from foundry.executors.real.quant import tensor_types
from foundry.executors.tiny_model import train_bpe_tokenizer
from tests.unit.executors.test_expert_prune import Recorder

pytestmark = pytest.mark.slow
DEAD = list(range(10))  # MLP channels silenced in every layer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stdlib_corpus(tmp_path_factory.mktemp("compact") / "corpus")


def _run(stage: dict[str, Any], model: Path, corpus: Path, where: Path) -> StageResult:
    (where / "work").mkdir(parents=True, exist_ok=True)
    ctx = StageContext(run_id="t", cycle=1, index=0, stage={"type": "compact", **stage},
                       recipe={"calibrationCorpus": corpus_ref(corpus, "stdlib-docstrings")},
                       input_dir=model, output_dir=where / "out", work_dir=where / "work",
                       base_model_dir=model)
    reporter = Recorder()
    result = CompactExecutor().run(ctx, reporter)
    assert reporter.calls[-1][0] == 1.0
    return result


def _dense(where: Path, corpus: Path) -> tuple[Any, Path]:
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=1024, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, max_position_embeddings=512,
                         architectures=["Qwen3ForCausalLM"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # silu(0) * 0 = 0: these channels never fire
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight[DEAD] = 0
            layer.mlp.up_proj.weight[DEAD] = 0
    model.save_pretrained(where)
    train_bpe_tokenizer(corpus / "train.txt", 1024).save_pretrained(where)
    return model, where


def test_dead_channels_are_removed_and_outputs_stay_identical(corpus: Path,
                                                              tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, where = _dense(tmp_path / "dense", corpus)
    result = _run({"deadThreshold": 0.01, "enableQuantization": False}, where, corpus,
                  tmp_path / "c")
    assert result.metrics["removed"]["channels"] == 2 * len(DEAD)
    assert sum(result.metrics["bands"]["channels"].values()) == 2 * 128
    assert result.metrics["bands"]["channels"]["dead"] >= 2 * len(DEAD)
    compacted = AutoModelForCausalLM.from_pretrained(result.output_dir, dtype=torch.float32)
    assert compacted.config.intermediate_size == 128 - len(DEAD)
    ids = torch.randint(0, 1024, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(compacted(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)
    # At the format's default deadThreshold (0.1) more channels are dead than the ten zeroed.
    default = _run({"enableQuantization": False}, where, corpus, tmp_path / "d")
    assert default.metrics["removed"]["channels"] >= 2 * len(DEAD)


def test_thresholds_that_decrease_are_refused(corpus: Path, tmp_path: Path) -> None:
    _, where = _dense(tmp_path / "dense", corpus)
    with pytest.raises(ExecutorError, match="lowThreshold"):
        _run({"lowThreshold": 0.15}, where, corpus, tmp_path / "r")


def test_moe_compact_writes_a_per_band_gguf_llama_cpp_runs(corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from foundry.executors.real.known_tokenizers import copy_tokenizer, load_tokenizer

    vocab = len(load_tokenizer("qwen3"))
    config = Qwen3MoeConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                            moe_intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                            num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                            max_position_embeddings=512, architectures=["Qwen3MoeForCausalLM"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # layer 1 contributes far less: it must land in a lower band
        model.model.layers[1].mlp.experts.down_proj.mul_(0.05)
    where = tmp_path / "moe"
    model.save_pretrained(where)
    copy_tokenizer("qwen3", where)
    # expert-prune first: the compacted GGUF is then also the pruned model through llama.cpp's
    # converter, which must carry 4 experts per layer and still generate.
    (tmp_path / "p" / "work").mkdir(parents=True)
    pruned = ExpertPruneExecutor().run(StageContext(
        run_id="t", cycle=1, index=0, stage={"type": "expert-prune", "keepExperts": 4},
        recipe={"calibrationCorpus": corpus_ref(corpus, "stdlib-docstrings")},
        input_dir=where, output_dir=tmp_path / "p" / "out", work_dir=tmp_path / "p" / "work",
        base_model_dir=where), Recorder())
    result = _run({}, pruned.output_dir, corpus, tmp_path / "c")
    bands = result.metrics["layerBands"]
    assert bands["0"] == "critical" and BANDS.index(bands["1"]) < BANDS.index("high")
    (gguf_file,) = result.files
    counts, _ = tensor_types(gguf_file)
    reader = gguf.GGUFReader(gguf_file)
    assert int(reader.fields["qwen3moe.expert_count"].contents()) == 4
    assert reader.get_tensor(0) is not None
    experts = next(t for t in reader.tensors if t.name == "blk.0.ffn_gate_exps.weight")
    assert int(experts.shape[-1]) == 4
    assert counts == result.metrics["tensorTypes"]
    assert len({t for t in counts if t not in ("F32", "F16")}) >= 2  # mixed precision
    verified = result.metrics["hardwareVerified"][0]
    assert verified["verified"] and verified["generatedTokens"] > 0
    assert result.metrics["sizeGb"] == pytest.approx(gguf_file.stat().st_size / 1e9)
    assert sum(result.metrics["bands"]["experts"].values()) == 2 * 4  # after the prune
