"""compensation-lora on a real tiny Qwen3-MoE pruned by expert-prune: the distillation must
bring the student's next-token distribution closer to its teacher's on text it never saw."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from foundry.executors.base import StageContext
from foundry.executors.corpus import corpus_ref
from foundry.executors.errors import ExecutorError
from foundry.executors.real.compensation_lora import CompensationLoraExecutor
from foundry.executors.real.data import resolve_corpus, token_windows
from foundry.executors.real.expert_prune import ExpertPruneExecutor
from tests.unit.executors.test_expert_prune import Recorder, run_stage, shared

pytestmark = pytest.mark.slow
__all__ = ["shared"]  # the module fixture, shared with the expert-prune tests


def _kl(student_dir: Path, teacher_dir: Path, ids: Any) -> float:
    from transformers import AutoModelForCausalLM

    def load(p: Path) -> Any:
        return AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()

    with torch.no_grad():
        s = torch.log_softmax(load(student_dir)(input_ids=ids).logits, -1)
        t = torch.log_softmax(load(teacher_dir)(input_ids=ids).logits, -1)
    return float(torch.nn.functional.kl_div(s.flatten(0, 1), t.flatten(0, 1), log_target=True,
                                            reduction="batchmean"))


def _compensate(shared: dict[str, Any], student: Path, where: Path,
                recipe: dict[str, Any] | None = None, **fields: Any) -> Any:
    stage = {"type": "compensation-lora", "teacher": "pre-prune",
             "calibrationCorpus": "stdlib-docstrings", "steps": 30, "learningRate": "1e-2",
             "loraRank": 8, "loraAlpha": 16, **fields}
    (where / "work").mkdir(parents=True, exist_ok=True)
    ctx = StageContext(run_id="t", cycle=1, index=1, stage=stage,
                       recipe=recipe or shared["recipe"], input_dir=student,
                       output_dir=where / "out", work_dir=where / "work",
                       base_model_dir=shared["model"])
    return CompensationLoraExecutor().run(ctx, Recorder())


def test_distillation_brings_the_pruned_student_back_toward_its_teacher(
        shared: dict[str, Any], tmp_path: Path) -> None:
    pruned = run_stage(ExpertPruneExecutor(), {"type": "expert-prune", "prunePct": 50},
                       shared, shared["model"], tmp_path / "prune").output_dir
    # A small corpus (18 windows): 30 steps visit each window several times, so the
    # divergence on it must fall; a random-init teacher's function does not generalise to
    # unseen text in 30 steps, which this test does not claim.
    full = resolve_corpus(shared["recipe"])
    small = tmp_path / "small"
    small.mkdir()
    (small / "train.txt").write_text((full / "train.txt").read_text()[:6000])
    (small / "valid.txt").write_text((full / "valid.txt").read_text()[:3000])
    recipe = {"calibrationCorpus": corpus_ref(small, "small")}
    text = token_windows(shared["tokenizer"], small, split="calibration", seq_len=128,
                         max_windows=64, seed=0)
    before = _kl(pruned, shared["model"], text)
    result = _compensate(shared, pruned, tmp_path / "kd", recipe,
                         targetModules=["q_proj", "v_proj", "gate_proj", "down_proj"])
    after = _kl(result.output_dir, shared["model"], text)
    assert result.metrics["teacher"] == "the run's source model"
    assert result.metrics["steps"] == 30 and len(result.metrics["lossCurve"]) == 30
    assert result.metrics["targetMap"]["gate_proj"]["parameters"] == 2  # fused experts reached
    assert after < 0.85 * before, (before, after)

    both = _compensate(shared, pruned, tmp_path / "both", recipe, lossType="both", steps=3,
                       mergedAtSave=False)
    assert both.metrics["merged"] is False
    assert {p.name for p in both.files} >= {"adapter_model.safetensors", "adapter_config.json"}


def test_a_teacher_that_is_no_model_is_refused(shared: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="teacher 'nowhere/model'"):
        _compensate(shared, shared["model"], tmp_path, teacher="nowhere/model")
