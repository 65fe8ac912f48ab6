"""The GGUF converter wrapper's own decisions, without running the converter."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from foundry.executors.errors import ExecutorError
from foundry.executors.real import gguf_convert


def _model(root: Path, arch: str, tensors: list[str]) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"architectures": [arch]}))
    header = json.dumps({n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                         for i, n in enumerate(tensors)}).encode()
    (root / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0" * 4 * len(tensors))
    return root


def test_qwen3_5_without_mtp_weights_is_converted_with_no_mtp(tmp_path: Path) -> None:
    plain = _model(tmp_path / "a", "Qwen3_5ForCausalLM", ["model.embed_tokens.weight"])
    with_mtp = _model(tmp_path / "b", "Qwen3_5ForCausalLM",
                      ["model.embed_tokens.weight", "mtp.fc.weight"])
    llama = _model(tmp_path / "c", "LlamaForCausalLM", ["model.embed_tokens.weight"])
    assert gguf_convert.converter_args(plain, tmp_path / "x.gguf", "f16")[-1] == "--no-mtp"
    assert "--no-mtp" not in gguf_convert.converter_args(with_mtp, tmp_path / "x.gguf", "f16")
    assert "--no-mtp" not in gguf_convert.converter_args(llama, tmp_path / "x.gguf", "f16")


def test_a_missing_converter_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gguf_convert.CONVERTER_DIR_ENV, str(tmp_path / "nowhere"))
    model = _model(tmp_path / "m", "LlamaForCausalLM", ["model.embed_tokens.weight"])
    assert gguf_convert.converter_version() is None
    with pytest.raises(ExecutorError, match=r"not installed in .*nowhere.*scripts/setup.sh"):
        gguf_convert.convert_to_gguf(model, tmp_path / "m.gguf", log_file=tmp_path / "log")


def test_config_without_architectures_is_refused_naming_the_field(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", "LlamaForCausalLM", [])
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ExecutorError, match="'architectures'"):
        gguf_convert.converter_args(model, tmp_path / "m.gguf", "f32")


def test_unknown_outtype_is_refused_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match=r"'f32', 'f16', 'bf16', 'q8_0'\], not 'q4_k'"):
        gguf_convert.convert_to_gguf(tmp_path, tmp_path / "m.gguf", outtype="q4_k",
                                     log_file=tmp_path / "log")


def test_the_installed_converter_is_the_pinned_version() -> None:
    # scripts/setup.sh installs it into the virtualenv; the tokenizer-hash table is per release
    assert gguf_convert.converter_version() == gguf_convert.CONVERTER_VERSION
