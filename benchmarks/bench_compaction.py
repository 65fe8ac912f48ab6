"""Expert pruning by metric: perplexity after removing 25% and 50% of a trained MoE's experts.

A tiny Qwen3-MoE (16 experts, top-2, normalised top-k) is first trained on the demo corpus
(CPython standard-library text) so that its experts specialise: a random-initialised model has
no structure for a metric to find. It is then profiled once (the project's profiler, over
calibration windows), and for each removal level and metric (`reap`, `activation_count`,
`random`) its experts are sliced by `expert_prune.slice_experts` and the held-out perplexity
measured (validation split, never seen by training, profiling or distillation). Each cell is
the median over seeds: `random` draws a different subset per seed; the deterministic metrics
give one subset, and seeds vary only the compensation-lora run that follows (the real
executor, teacher = the unpruned model). Prints a JSON report with every value.

    .venv/bin/python benchmarks/bench_compaction.py [--train-steps 200] [--seeds 3]

Sized for a shared 2-core machine (about two minutes with the defaults); figures from another
machine are not comparable, and the model is tiny: read the ranking, not the magnitudes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from foundry.executors.architectures import FAMILIES
from foundry.executors.base import StageContext
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from foundry.executors.real.activation_profile import profile_model
from foundry.executors.real.compensation_lora import CompensationLoraExecutor
from foundry.executors.real.data import token_windows
from foundry.executors.real.evaluate import perplexity_of, window_nll
from foundry.executors.real.expert_prune import choose, layer_scores, slice_experts
from foundry.executors.tiny_model import train_bpe_tokenizer

from _machine import machine_info

EXPERTS, TOP_K, SEQ = 16, 2, 128
METRICS = ("reap", "activation_count", "random")
LEVELS = (25, 50)


class _Quiet:
    def progress(self, fraction: float, message: str = "", metrics: Any = None) -> None:
        del fraction, message, metrics


def _model(vocab: int) -> Any:
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    config = Qwen3MoeConfig(
        vocab_size=vocab, hidden_size=96, intermediate_size=192, moe_intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
        num_experts=EXPERTS, num_experts_per_tok=TOP_K, norm_topk_prob=True,
        max_position_embeddings=512, tie_word_embeddings=True,
        architectures=["Qwen3MoeForCausalLM"])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _train(model: Any, windows: Any, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    losses = []
    n = int(windows.shape[0])
    for step in range(steps):
        batch = windows[[(step * 8 + j) % n for j in range(8)]]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
    model.eval()
    return losses


def _ppl(model: Any, windows: Any) -> float:
    return round(perplexity_of(window_nll(model, windows), SEQ), 4)


def _ppl_dir(path: Path, windows: Any) -> float:
    from transformers import AutoModelForCausalLM

    return _ppl(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--compensation-steps", type=int, default=20)
    parser.add_argument("--no-compensation", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    try:
        _measure(args, root, started)
    finally:  # 3 levels x 3 metrics x seeds saved models: not left in /tmp
        shutil.rmtree(root, ignore_errors=True)


def _measure(args: argparse.Namespace, root: Path, started: float) -> None:
    # the executors read corpora only under allowed roots: this run's scratch is one
    os.environ["FOUNDRY_MODEL_ROOTS"] = os.pathsep.join(
        p for p in (str(root), os.environ.get("FOUNDRY_MODEL_ROOTS")) if p)
    corpus = build_stdlib_corpus(root / "corpus")
    tokenizer = train_bpe_tokenizer(corpus / "train.txt", 2048)
    train = token_windows(tokenizer, corpus, split="calibration", seq_len=SEQ,
                          max_windows=4096, seed=0)
    held_out = token_windows(tokenizer, corpus, split="heldout", seq_len=SEQ,
                             max_windows=64, seed=1)
    model = _model(len(tokenizer))
    t0 = time.perf_counter()
    losses = _train(model, train, args.train_steps)
    train_s = time.perf_counter() - t0
    base_dir = root / "trained"
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    profile = profile_model(model, train[:32])
    base_ppl = _ppl(model, held_out)
    arch = FAMILIES["qwen3_moe"]
    layers = [e["layer"] for e in profile["layers"] if "experts" in e]
    recipe = {"calibrationCorpus": corpus_ref(corpus, "stdlib")}
    rows: list[dict[str, Any]] = []
    for level in LEVELS:
        keep = EXPERTS - EXPERTS * level // 100
        for metric in METRICS:
            plain, compensated = [], []
            for seed in range(args.seeds):
                scores = layer_scores(profile, layers, EXPERTS, metric, seed)
                pruned = copy.deepcopy(model)
                slice_experts(pruned, arch, {i: choose(scores[i], keep) for i in layers})
                plain.append(_ppl(pruned, held_out))
                if args.no_compensation:
                    continue
                where = root / f"{level}-{metric}-{seed}"
                pruned.save_pretrained(where / "in")
                tokenizer.save_pretrained(where / "in")
                (where / "work").mkdir(parents=True)
                ctx = StageContext(
                    run_id="bench", cycle=1, index=2, seed=seed, recipe=recipe,
                    stage={"type": "compensation-lora", "teacher": "pre-prune",
                           "calibrationCorpus": "stdlib", "steps": args.compensation_steps,
                           "learningRate": "3e-3", "loraRank": 8, "loraAlpha": 16,
                           "targetModules": ["q_proj", "v_proj", "gate_proj", "down_proj"]},
                    input_dir=where / "in", output_dir=where / "out",
                    work_dir=where / "work", base_model_dir=base_dir)
                result = CompensationLoraExecutor().run(ctx, _Quiet())
                compensated.append(_ppl_dir(result.output_dir, held_out))
            rows.append({
                "removedPct": level, "keptExperts": keep, "metric": metric,
                "pplMedian": statistics.median(plain), "ppl": plain,
                "pplCompensatedMedian": statistics.median(compensated) if compensated else None,
                "pplCompensated": compensated,
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({
        "benchmark": "bench_compaction",
        "machine": machine_info(),
        "model": {"family": "qwen3_moe", "experts": EXPERTS, "topK": TOP_K,
                  "params": sum(p.numel() for p in model.parameters()),
                  "trainSteps": args.train_steps, "trainSeconds": round(train_s, 1),
                  "trainLossFirst": round(losses[0], 4), "trainLossLast": round(losses[-1], 4)},
        "heldOutWindows": int(held_out.shape[0]), "seqLen": SEQ, "seeds": args.seeds,
        "compensationSteps": None if args.no_compensation else args.compensation_steps,
        "baselinePpl": base_ppl,
        "results": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
