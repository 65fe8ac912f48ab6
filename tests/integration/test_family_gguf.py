"""A structurally pruned scale twin loads in llama.cpp with the predicted parameter count.

The twins carry the real Qwen tokenizers (rebuilt offline by `known_tokenizers`) so that
llama.cpp's official converter recognises them; the GGUF is written at f32 and loaded by
llama-cpp-python, which counts its parameters and generates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from foundry.executors.base import StageContext
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from foundry.executors.real.gguf_convert import convert_to_gguf
from foundry.executors.real.known_tokenizers import load_tokenizer
from foundry.executors.real.prune import PruneExecutor
from foundry.executors.scale_models import Widths, build_scale_model, default_config

pytestmark = pytest.mark.slow

WIDTHS = Widths(hidden=64, head_dim=32, intermediate=128, moe_intermediate=32,
                linear_head_dim=32)


class Quiet:
    def progress(self, fraction: float, message: str = "",
                 metrics: Mapping[str, float] | None = None) -> None:
        del fraction, message, metrics


@pytest.mark.parametrize(("family", "tokenizer"), [("qwen3_5", "qwen3_5"),
                                                   ("qwen3_moe", "qwen3")])
def test_pruned_twin_loads_in_llama_cpp_with_the_predicted_parameter_count(
    tmp_path: Path, family: str, tokenizer: str
) -> None:
    import llama_cpp

    base = build_scale_model(default_config(family), tmp_path / "base",
                             tokenizer=load_tokenizer(tokenizer), widths=WIDTHS)
    corpus = build_stdlib_corpus(tmp_path / "corpus")
    stage = {"type": "prune", "strategy": "random", "level": 0.5, "minHeadsPerLayer": 1,
             "minKvHeadsPerLayer": 1, "mlpLevel": 0.25}
    ctx = StageContext(run_id="t", cycle=1, index=0, stage=stage,
                       recipe={"calibrationCorpus": corpus_ref(corpus, "stdlib")},
                       input_dir=base, output_dir=tmp_path / "pruned",
                       work_dir=tmp_path / "work", base_model_dir=base)
    metrics: dict[str, Any] = dict(PruneExecutor().run(ctx, Quiet()).metrics)
    assert metrics["headsAfter"] < metrics["headsBefore"]
    if family == "qwen3_5":
        assert metrics["valueHeadsAfter"] < metrics["valueHeadsBefore"]
    gguf = convert_to_gguf(ctx.output_dir, tmp_path / "pruned.gguf", outtype="f32",
                           log_file=tmp_path / "convert.log")
    llm = llama_cpp.Llama(str(gguf), n_ctx=64, verbose=False)
    assert llama_cpp.llama_model_n_params(llm.model) == metrics["params"]
    out = llm("def hello", max_tokens=4, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1
