"""Real tokenizers rebuilt offline tokenize like llama.cpp reads them from the converted GGUF.

For Qwen3.5 and Qwen3, a small random model of the family on the rebuilt tokenizer goes through
llama.cpp's converter; llama.cpp must recognise the pre-tokenizer (the converter refuses one it
does not know) and then split every test string into exactly the ids transformers gives.
SmolLM2's tokenizer is covered the same way by the tiny Llama in test_real_quant_eval.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import foundry.executors.real  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from foundry.executors.real.gguf_convert import convert_to_gguf
from foundry.executors.real.known_tokenizers import (
    KNOWN,
    copy_tokenizer,
    load_tokenizer,
    tokenizer_dir,
)

pytestmark = pytest.mark.slow

TEXTS = [
    "def hello_world():\n    print('héllo 世界')  # 123",
    "Hello, World! It's 2026; we'll see... 3.14159 and 1,234,567.",
    "\n \n\n\t\tindented\r\n   trailing   \n",
    "naïve café ☕ 🦙🦙 Ünïcödé — “quotes” \u2018single\u2019 ¿qué? Привет мир",
    "कान्ति थाई: สวัสดี 한국어 日本語のテキスト",
    "x=[i**2 for i in range(10)]\nif x!=y:return{'a':b}",
]
CHAT = ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>")


def _qwen3_config(vocab: int) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       head_dim=32, max_position_embeddings=256, tie_word_embeddings=True,
                       architectures=["Qwen3ForCausalLM"])


def _qwen3_5_config(vocab: int) -> Any:
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, linear_num_key_heads=1,
        linear_num_value_heads=2, linear_key_head_dim=32, linear_value_head_dim=32,
        max_position_embeddings=256, tie_word_embeddings=True,
        architectures=["Qwen3_5ForCausalLM"])


FAMILIES = {
    # tokenizer: (config builder, padded vocabulary as the real checkpoints ship it, GGUF arch
    # and pre-tokenizer llama.cpp must report)
    "qwen3": (_qwen3_config, 151_936, "qwen3", "qwen2"),
    "qwen3_5": (_qwen3_5_config, 248_320, "qwen35", "qwen35"),
}


def _model_dir(name: str, root: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    build, vocab, _, _ = FAMILIES[name]
    out = root / name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: Any = AutoModelForCausalLM.from_config(build(vocab))
    model.save_pretrained(out, safe_serialization=True)
    return copy_tokenizer(name, out)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_llama_cpp_tokenizes_like_transformers_on_the_converted_gguf(
    name: str, tmp_path: Path
) -> None:
    import gguf
    import llama_cpp

    model_dir = _model_dir(name, tmp_path)
    out = convert_to_gguf(model_dir, tmp_path / f"{name}.gguf", outtype="f16",
                          log_file=tmp_path / "convert.log")
    fields = gguf.GGUFReader(out).fields
    _, _, arch, pre = FAMILIES[name]
    assert fields["general.architecture"].contents() == arch
    assert fields["tokenizer.ggml.pre"].contents() == pre

    tok = load_tokenizer(name)
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False)
    for text in TEXTS:
        hf = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == hf, text
        assert tok.decode(hf) == text
    chat = tok(CHAT, add_special_tokens=False)["input_ids"]
    assert llm.tokenize(CHAT.encode(), add_bos=False, special=True) == chat
    assert tok.convert_ids_to_tokens(chat[0]) == "<|im_start|>"


def test_the_qwen_tokenizers_have_the_real_vocabularies() -> None:
    qwen3_5, qwen3 = load_tokenizer("qwen3_5"), load_tokenizer("qwen3")
    assert len(qwen3_5) == 248_044 + 33 and len(qwen3) == 151_643 + 26
    assert qwen3_5.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "</think>"]) == [
        248_044, 248_046, 248_069]
    assert qwen3.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "</think>"]) == [
        151_643, 151_645, 151_668]
    assert qwen3_5.eos_token == qwen3.eos_token == "<|im_end|>"
    # measured on the feasibility machine: this string is 20 Qwen3.5 tokens
    assert len(qwen3_5(TEXTS[0], add_special_tokens=False)["input_ids"]) == 20


def test_a_tokenizer_is_built_once_and_named_by_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOUNDRY_TOKENIZER_CACHE", str(tmp_path))
    first = tokenizer_dir("qwen3")
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert tokenizer_dir("qwen3") == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging left behind
    assert first.name.startswith("qwen3-")
    config = json.loads((first / "tokenizer_config.json").read_text())
    assert "name_or_path" not in config  # no path of this machine in a hashed model folder


def test_unknown_tokenizer_names_the_known_ones() -> None:
    from foundry.executors.errors import ExecutorError

    with pytest.raises(ExecutorError, match=r"'gpt5'.*qwen3.*qwen3_5.*smollm2"):
        tokenizer_dir("gpt5")
    assert sorted(KNOWN) == ["qwen3", "qwen3_5", "smollm2"]
