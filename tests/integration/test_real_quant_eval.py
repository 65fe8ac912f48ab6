"""Real GGUF export (llama.cpp's converter), llama.cpp quantization + verification, evaluation
and the code sandbox.

One tiny Llama (hidden 256, so K-quants are real; SmolLM2's tokenizer, tied embeddings) is built
and trained on the stdlib corpus for 40 steps once per module, so perplexities mean something; a
hidden-128 twin shows the K-quant fallback. Everything runs offline on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before torch loads libgomp: on a shared 2-core machine, spinning OpenMP workers made a training
# step 8x slower with 2 threads than with 1 (measured); passive waiting removes that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from foundry.domain.values.artifact import BenchmarkResult, HardwareVerified, Sample
from foundry.executors.base import StageContext
from foundry.executors.corpus import build_stdlib_corpus, corpus_hash
from foundry.executors.errors import ExecutorError
from foundry.executors.tiny_model import build_tiny_llama

pytestmark = pytest.mark.slow

SEQ = 128


class _Reporter:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str, dict[str, float]]] = []

    def progress(self, fraction: float, message: str = "",
                 metrics: Mapping[str, float] | None = None) -> None:
        self.calls.append((fraction, message, dict(metrics or {})))


@dataclass(frozen=True)
class Assets:
    corpus: Path
    base: Path  # untrained, hidden 256
    trained: Path  # base after 40 training steps
    narrow: Path  # untrained, hidden 128
    recipe: dict[str, Any]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    import torch

    from foundry.executors.real.common import load_model, save_model, set_seed
    from foundry.executors.real.data import token_windows

    root = tmp_path_factory.mktemp("real-quant-eval")
    corpus = build_stdlib_corpus(root / "corpus")
    base = build_tiny_llama(root / "base")
    narrow = build_tiny_llama(root / "narrow", hidden=128, intermediate=384)
    set_seed(0)
    model, tok = load_model(base)
    windows = token_windows(tok, corpus, split="calibration", seq_len=SEQ, max_windows=320,
                            seed=0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(40):
        x = windows[step * 8 : (step + 1) * 8]
        model(input_ids=x, labels=x).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    model.eval()
    trained = save_model(model, tok, root / "trained")
    recipe = {
        "calibrationCorpus": {"name": "stdlib", "contentHash": corpus_hash(corpus),
                              "sizeBytes": 0, "sourceUrl": str(corpus)},
        "quantTiers": [{"format": "gguf", "variants": ["q4_k_m"]}],
    }
    return Assets(corpus, base, trained, narrow, recipe)


def _ctx(tmp: Path, stage: dict[str, Any], recipe: Mapping[str, Any], input_dir: Path,
         base_dir: Path) -> StageContext:
    (tmp / "out").mkdir(parents=True)
    return StageContext(run_id="r", cycle=1, index=0, stage=stage, recipe=recipe,
                        input_dir=input_dir, output_dir=tmp / "out", work_dir=tmp / "work",
                        base_model_dir=base_dir)


def _llama_cpp_logits(gguf_file: Path, ids: list[int]) -> Any:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=256, logits_all=True, n_threads=2,
                          verbose=False)
    llm.eval(ids)
    return np.asarray(llm.scores[: len(ids)], dtype=np.float64)


def _llama_cpp_ppl(gguf_file: Path, windows: list[list[int]]) -> float:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=256, logits_all=True, n_threads=2,
                          verbose=False)
    total, count = 0.0, 0
    for ids in windows:
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)[:-1]
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
        count += len(ids) - 1
    return float(np.exp(total / count))


def _hf_and_llama_ppl(model_dir: Path, gguf_file: Path, corpus: Path,
                      *others: Path) -> tuple[float, ...]:
    """HF perplexity of `model_dir`, then llama.cpp's of `gguf_file` and `others`, on the same
    8 held-out windows."""
    from foundry.executors.real.common import load_model
    from foundry.executors.real.data import token_windows
    from foundry.executors.real.evaluate import perplexity_of, window_nll

    model, tok = load_model(model_dir)
    windows = token_windows(tok, corpus, split="heldout", seq_len=SEQ, max_windows=8, seed=0)
    hf = perplexity_of(window_nll(model, windows), SEQ)
    return hf, *(_llama_cpp_ppl(f, windows.tolist()) for f in (gguf_file, *others))


# --- GGUF export ---------------------------------------------------------------------------


def _convert(model_dir: Path, out: Path) -> Path:
    from foundry.executors.real.gguf_convert import convert_to_gguf

    return convert_to_gguf(model_dir, out, outtype="f32", log_file=out.with_suffix(".log"))


def test_f32_gguf_matches_transformers_on_tokens_and_perplexity(
    assets: Assets, tmp_path: Path
) -> None:
    import llama_cpp
    from transformers import AutoTokenizer

    out = _convert(assets.trained, tmp_path / "m.gguf")
    text = (assets.corpus / "valid.txt").read_text("utf-8")[:6000]
    hf_ids = AutoTokenizer.from_pretrained(assets.trained)(text)["input_ids"]
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == hf_ids
    del llm

    hf, gg = _hf_and_llama_ppl(assets.trained, out, assets.corpus)
    assert abs(hf - gg) / hf < 1e-3, (hf, gg)
    assert hf < 0.05 * 49152  # trained: far below the ~vocabulary size of an untrained model


@pytest.mark.parametrize(("kind", "extra"), [
    ("linear", {"factor": 4.0}),
    ("yarn", {"factor": 4.0, "original_max_position_embeddings": 64}),
    ("llama3", {"factor": 8.0, "original_max_position_embeddings": 64,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
])
def test_rope_scaling_is_carried_into_the_gguf(
    assets: Assets, tmp_path: Path, kind: str, extra: dict[str, float]
) -> None:
    import numpy as np
    import torch

    scaled = shutil.copytree(assets.trained, tmp_path / "scaled")
    cfg = json.loads((scaled / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": kind, "rope_theta": 10000.0, **extra}
    (scaled / "config.json").write_text(json.dumps(cfg))
    out = _convert(scaled, tmp_path / "scaled.gguf")
    unscaled = _convert(assets.trained, tmp_path / "plain.gguf")
    hf, gg = _hf_and_llama_ppl(scaled, out, assets.corpus)
    assert abs(hf - gg) / hf < 1e-3, (hf, gg)
    # 40 steps leave the model with little use for positions, so perplexity barely moves with
    # the scaling: the logits show it. llama.cpp's must follow HF's scaled model far more
    # closely than the scaling moves them.
    from foundry.executors.real.common import load_model
    from foundry.executors.real.data import token_windows

    model, tok = load_model(scaled)
    ids = token_windows(tok, assets.corpus, split="heldout", seq_len=SEQ, max_windows=1, seed=0)
    with torch.no_grad():
        hf_logits = model(input_ids=ids).logits[0].double().numpy()
    gap = np.abs(hf_logits - _llama_cpp_logits(out, ids[0].tolist())).max()
    effect = np.abs(hf_logits - _llama_cpp_logits(unscaled, ids[0].tolist())).max()
    assert gap < 0.1 * effect, (gap, effect)


def test_export_refuses_an_architecture_the_converter_does_not_know(
    assets: Assets, tmp_path: Path
) -> None:
    other = shutil.copytree(assets.base, tmp_path / "toy")
    cfg = json.loads((other / "config.json").read_text())
    cfg.update(model_type="toy", architectures=["FoundryToyForCausalLM"])
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExecutorError, match=r"does not support .*'FoundryToyForCausalLM'"):
        _convert(other, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


# --- quant ---------------------------------------------------------------------------------


def test_quant_writes_real_k_quants_and_verifies_every_tier(
    assets: Assets, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    from foundry.executors.real.quant import QuantExecutor

    stage = {"type": "quant", "format": "gguf", "quantTypes": ["Q8_0", "Q4_K_M"]}
    ctx = _ctx(tmp_path, stage, assets.recipe, assets.trained, assets.base)
    result = QuantExecutor().run(ctx, _Reporter())

    types = result.metrics["tensorTypes"]
    assert list(types) == ["F32", "Q8_0", "Q4_K_M"]  # the tier's q4_k_m is the same variant
    assert types["F32"] == {"F32": 38}  # 4 x 9 per layer, the embedding (tied), the final norm
    assert types["Q8_0"]["Q8_0"] == 29  # the 28 layer matrices and the embedding
    assert types["Q4_K_M"]["Q4_K"] > 0 and "Q5_0" not in types["Q4_K_M"]
    assert not any("fell back" in n for n in result.notes)
    assert sorted(p.name for p in result.files) == [
        "model-F32.gguf", "model-Q4_K_M.gguf", "model-Q8_0.gguf"]
    verified = result.metrics["hardwareVerified"]
    assert [v["format"] for v in verified] == ["gguf-F32", "gguf-Q8_0", "gguf-Q4_K_M"]
    for entry in verified:
        HardwareVerified.model_validate(entry)  # the artifact accepts it as written
        assert entry["verified"] is True and entry["tokensPerSec"] > 0
        assert entry["device"] == "cpu" and entry["memoryUsageGb"] > 0
    sizes = result.metrics["ggufSizes"]
    assert result.metrics["finalSizeGb"] == sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["F32"]
    assert (ctx.output_dir / "model.safetensors").read_bytes() == (
        assets.trained / "model.safetensors").read_bytes()


def test_quant_reports_k_quant_fallback_on_a_narrow_model(
    assets: Assets, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    from foundry.executors.real.quant import QuantExecutor

    stage = {"type": "quant", "format": "gguf", "quantTypes": ["Q4_K_M"]}
    ctx = _ctx(tmp_path, stage, {}, assets.narrow, assets.narrow)
    result = QuantExecutor().run(ctx, _Reporter())
    # The tied embedding is quantized as the output head (q6_K, which falls back to Q8_0).
    assert result.metrics["tensorTypes"]["Q4_K_M"] == {"F32": 9, "Q5_0": 24, "Q8_0": 5}
    assert any(n.startswith("Q4_K_M: 24 tensors fell back to Q5_0") for n in result.notes)


def test_quant_refuses_unknown_types_listing_the_supported_ones(
    assets: Assets, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    from foundry.executors.real.quant import QuantExecutor

    stage = {"type": "quant", "format": "gguf", "quantTypes": ["Q3_XYZ"]}
    ctx = _ctx(tmp_path, stage, {}, assets.trained, assets.base)
    with pytest.raises(ExecutorError, match=r"Q3_XYZ.*Q4_K_M"):
        QuantExecutor().run(ctx, _Reporter())


# --- eval ----------------------------------------------------------------------------------


def test_eval_measures_perplexity_and_the_code_benchmark_against_base(
    assets: Assets, tmp_path: Path
) -> None:
    from foundry.executors.real.evaluate import EvalExecutor

    stage = {"type": "eval", "compareToBase": True,
             "benchmarks": [{"name": "perplexity"}, {"name": "foundry-code-mini"}]}
    ctx = _ctx(tmp_path, stage, assets.recipe, assets.trained, assets.base)
    result = EvalExecutor().run(ctx, _Reporter())
    m = result.metrics
    assert m["finalPerplexity"] < m["baselinePerplexity"] and m["improvementPct"] > 0
    files = {p.name: p for p in result.files}
    ppl, code = m["benchmarks"]
    for bench in m["benchmarks"]:
        BenchmarkResult.model_validate(bench)
    for sample in m["samples"]:
        Sample.model_validate(sample)
    assert ppl["name"] == "perplexity" and ppl["score"] == m["finalPerplexity"]
    assert code["name"] == "foundry-code-mini" and code["metric"] == "pass@1"
    assert 0.0 <= code["score"] <= 1.0 and 0.0 <= code["baseScore"] <= 1.0
    for bench, path_key, hash_key in ((ppl, "samplesPath", "resultHash"),
                                      (code, "samplesPath", "resultHash"),
                                      (code, "baseSamplesPath", "baseResultHash")):
        data = files[bench[path_key]].read_bytes()
        assert bench[hash_key] == "sha256:" + hashlib.sha256(data).hexdigest()
    rows = [json.loads(line) for line in files[code["samplesPath"]].read_text().splitlines()]
    assert len(rows) == 12 and {"prompt", "completion", "passed", "error"} <= set(rows[0])
    assert code["score"] == round(sum(r["passed"] for r in rows) / 12, 6)
    assert len(m["samples"]) == 3
    assert set(m["samples"][0]) == {"label", "prompt", "completion", "baselineCompletion"}
    assert (ctx.output_dir / "config.json").is_file()


def test_eval_refuses_unknown_benchmarks(assets: Assets, tmp_path: Path) -> None:
    from foundry.executors.real.evaluate import EvalExecutor

    stage = {"type": "eval", "benchmarks": [{"name": "hellaswag"}]}
    ctx = _ctx(tmp_path / "hellaswag", stage, assets.recipe, assets.trained, assets.base)
    with pytest.raises(ExecutorError, match=r"'hellaswag'.*foundry-code-mini.*perplexity"):
        EvalExecutor().run(ctx, _Reporter())
    stage = {"type": "eval", "benchmarks": [{"name": "mmlu"}]}
    ctx = _ctx(tmp_path / "mmlu", stage, assets.recipe, assets.trained, assets.base)
    with pytest.raises(ExecutorError, match=r"'mmlu' cannot run on this machine without a "
                                            r"data file.*dataFile"):
        EvalExecutor().run(ctx, _Reporter())


BENCH_FILES = Path(__file__).parents[1] / "fixtures" / "benchmarks"


def test_eval_scores_mmlu_and_gsm8k_from_local_data_files_with_their_hashes(
    assets: Assets, tmp_path: Path
) -> None:
    from foundry.executors.real.evaluate import EvalExecutor
    from foundry.executors.real.mmlu import LETTERS

    mmlu_file, gsm_file = BENCH_FILES / "mmlu-mini.jsonl", BENCH_FILES / "gsm8k-mini.jsonl"
    stage = {"type": "eval", "compareToBase": True, "benchmarks": [
        {"name": "mmlu", "dataFile": str(mmlu_file), "nShot": 1},
        {"name": "gsm8k", "dataFile": str(gsm_file), "limit": 2, "maxNewTokens": 12}]}
    ctx = _ctx(tmp_path, stage, assets.recipe, assets.trained, assets.base)
    result = EvalExecutor().run(ctx, _Reporter())
    files = {p.name: p for p in result.files}
    by_name = {b["name"]: b for b in result.metrics["benchmarks"]}
    for name, path, problems in (("mmlu", mmlu_file, 6), ("gsm8k", gsm_file, 2)):
        bench = by_name[name]
        BenchmarkResult.model_validate(bench)
        ledger = bench["ledger"]
        assert ledger["datasetHash"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert ledger["dataset"]["file"] == path.name and ledger["problems"] == problems
        for key, hash_key in (("samplesPath", "resultHash"),
                              ("baseSamplesPath", "baseResultHash")):
            data = files[bench[key]].read_bytes()
            assert bench[hash_key] == "sha256:" + hashlib.sha256(data).hexdigest()
        rows = [json.loads(line) for line in files[bench["samplesPath"]].read_text().splitlines()]
        assert len(rows) == problems
        assert bench["score"] == round(sum(r["correct"] for r in rows) / problems, 6)
        assert bench["delta"] == round(bench["score"] - bench["baseScore"], 6)
    mmlu = by_name["mmlu"]
    assert mmlu["metric"] == "acc" and mmlu["nShot"] == 1
    assert mmlu["ledger"]["shotIds"] == ["mini-0", "mini-4"]
    rows = [json.loads(line) for line in files[mmlu["samplesPath"]].read_text().splitlines()]
    for row in rows:  # the answer is the letter with the highest log-likelihood
        assert row["predicted"] == max(row["logprobs"], key=row["logprobs"].get)
        assert set(row["logprobs"]) == set(LETTERS[:4])
    gsm = by_name["gsm8k"]
    assert gsm["metric"] == "exact_match" and gsm["subset"] == "first 2"
    assert gsm["ledger"]["sampling"]["maxNewTokens"] == 12
    assert mmlu["ledger"]["ledgerKey"] != gsm["ledger"]["ledgerKey"]


def test_one_pass_letter_scores_equal_scoring_each_continuation_alone(assets: Assets) -> None:
    import torch

    from foundry.executors.real.common import load_model
    from foundry.executors.real.mmlu import choice_logprobs

    model, tok = load_model(assets.trained)
    prompt = "What is 7 + 5?\nA. 10\nB. 11\nC. 12\nD. 13\nAnswer:"
    letters = [" A", " B", " C", " D"]
    fast = choice_logprobs(model, tok, prompt, letters)
    context = tok(prompt)["input_ids"]
    slow = []
    for letter in letters:
        whole = tok(prompt + letter)["input_ids"]
        assert len(whole) == len(context) + 1  # what makes the one-pass path apply
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(),
                                     dim=-1)
        slow.append(float(logp[-2, whole[-1]]))
    assert fast == pytest.approx(slow, abs=1e-4)
    # a multi-token continuation takes the per-continuation path and sums its tokens
    two = choice_logprobs(model, tok, prompt, [" twelve apples", " C"])
    assert two[0] < 0 and two[1] == pytest.approx(fast[2], abs=1e-4)


# --- sandbox -------------------------------------------------------------------------------


def test_sandbox_passes_every_reference_solution(tmp_path: Path) -> None:
    from foundry.executors.real.evaluate import load_problems
    from foundry.executors.real.sandbox import run_candidate

    for problem in load_problems():
        program = problem["prompt"] + problem["solution"] + "\n" + "\n".join(problem["tests"])
        result = run_candidate(program, timeout_s=5.0, work_dir=tmp_path)
        assert result.passed, (problem["id"], result.error)


def test_sandbox_kills_a_loop_that_never_ends(tmp_path: Path) -> None:
    from foundry.executors.real.sandbox import run_candidate

    result = run_candidate("while True:\n    pass\nassert 1 == 1\n", timeout_s=1.0,
                           work_dir=tmp_path)
    assert not result.passed and result.error is not None and "timeout" in result.error
    assert result.seconds < 4


def test_sandbox_blocks_sockets(tmp_path: Path) -> None:
    from foundry.executors.real import sandbox

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        for module in ("socket", "_socket"):
            code = (f"import {module}\n{module}.socket().connect(('127.0.0.1', {port}))\n"
                    "assert 1 == 1\n")
            result = sandbox.run_candidate(code, timeout_s=5.0, work_dir=tmp_path)
            assert not result.passed and result.error is not None
            assert result.error.startswith("the program raised")
            assert result.containment.startswith("bwrap(user,pid,net")
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


def test_sandbox_contains_writes_outside_its_scratch_dir(tmp_path: Path) -> None:
    from foundry.executors.real.sandbox import run_candidate

    target = tmp_path / "outside" / "escaped.txt"
    target.parent.mkdir()
    code = f"open({str(target)!r}, 'w').write('x')\n"
    result = run_candidate(code, timeout_s=5.0, work_dir=tmp_path / "work")
    assert not result.passed and not target.exists()
    inside = run_candidate("open('ok.txt', 'w').write('x')\nassert open('ok.txt').read() == 'x'\n",
                           timeout_s=5.0, work_dir=tmp_path / "work")
    assert inside.passed, inside.error


def test_sandbox_does_not_count_an_early_exit_as_a_pass(tmp_path: Path) -> None:
    from foundry.executors.real.sandbox import run_candidate

    result = run_candidate("import sys\nsys.exit(0)\nassert 1 == 2\n", timeout_s=5.0,
                           work_dir=tmp_path)
    assert not result.passed and result.error == "the program raised SystemExit"
    assert "bwrap" in result.containment and "rlimits" in result.containment


def _tier_ctx(tmp: Path, stage: dict[str, Any], assets: Assets,
              tiers: list[Path]) -> StageContext:
    """An eval context whose run wrote `tiers` in an earlier stage (as the orchestrator hands
    them over: the upstream records, and the blob store's path for each hash)."""
    by_hash = {"sha256:" + hashlib.sha256(p.read_bytes()).hexdigest(): p for p in tiers}
    ctx = _ctx(tmp, stage, assets.recipe, assets.trained, assets.base)
    upstream = [{"path": p.name, "sha256": h, "type": "quant", "cycle": 1, "index": 0}
                for h, p in by_hash.items()]
    return dataclasses.replace(ctx, extras={"blobPath": lambda h: by_hash[h],
                                            "upstreamFiles": upstream})


def test_humaneval_scores_the_gguf_tier_through_llama_cpp_when_the_entry_names_it(
    assets: Assets, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    from foundry.executors.real.evaluate import EvalExecutor
    from foundry.executors.real.quant import QuantExecutor

    quant = QuantExecutor().run(_ctx(tmp_path / "q", {"type": "quant", "format": "gguf",
                                                      "quantTypes": ["Q8_0"]},
                                     assets.recipe, assets.trained, assets.base), _Reporter())
    q8 = next(p for p in quant.files if p.name == "model-Q8_0.gguf")
    stage = {"type": "eval", "compareToBase": True, "benchmarks": [
        {"name": "humaneval", "limit": 2, "maxNewTokens": 24, "gguf": "q8_0"}]}
    result = EvalExecutor().run(_tier_ctx(tmp_path / "e", stage, assets, list(quant.files)),
                                _Reporter())
    human = next(b for b in result.metrics["benchmarks"] if b["name"] == "humaneval")
    led = human["ledger"]
    assert led["modelHash"] == "sha256:" + hashlib.sha256(q8.read_bytes()).hexdigest()
    assert led["modelFormat"] == "gguf" and led["modelFile"] == "model-Q8_0.gguf"
    assert led["runtime"].startswith("llama-cpp-python ")
    assert led["baseRuntime"].startswith("transformers ")
    assert led["baseModelFormat"] == "safetensors"
    samples = next(p for p in result.files if p.name == human["samplesPath"])
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["taskId"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert human["score"] == sum(r["passed"] for r in rows) / 2

    # The tier is really what runs: one that llama.cpp cannot load fails the benchmark, named.
    broken = tmp_path / "broken" / "model-Q8_0.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"GGUF but not really")
    with pytest.raises(ExecutorError, match=r"llama.cpp could not generate with model-Q8_0"):
        EvalExecutor().run(_tier_ctx(tmp_path / "b", stage, assets, [broken]), _Reporter())
    # A tier no earlier stage wrote is refused, naming those there are.
    missing = {**stage, "benchmarks": [{"name": "humaneval", "limit": 1, "gguf": "Q2_K"}]}
    written = ", ".join(sorted(p.name[6:-5] for p in quant.files))  # model-<TYPE>.gguf
    with pytest.raises(ExecutorError, match=rf"'Q2_K'.*tiers written: {written}\)"):
        EvalExecutor().run(_tier_ctx(tmp_path / "m", missing, assets, list(quant.files)),
                           _Reporter())
