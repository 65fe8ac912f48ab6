"""HF Llama directory -> GGUF (f32 or f16), written here with `gguf.GGUFWriter`.

Why a writer of our own: the official `convert_hf_to_gguf.py` ships only inside the
llama-cpp-python sdist (the wheel and PyPI's `gguf` have no converter), needs torch and
sentencepiece, and refuses custom BPE tokenizers until `get_vocab_base_pre` is patched. This
writer needs only gguf, numpy and the safetensors files; the feasibility study measured its f32
output at the same perplexity as the official converter's (and its llama.cpp tokenization
identical to the HF tokenizer's).

What it gets right for llama.cpp: the Q/K rows are permuted from HF's rotate-half layout to
llama.cpp's interleaved one; `attention.key_length`/`value_length` are written explicitly (a
head-pruned model has head_dim != hidden / heads); rope base, RMS eps and rope scaling
(linear, yarn, llama3 via a `rope_freqs` tensor) are carried over; the tokenizer is written as
a GPT-2 byte-level BPE (tokens, types, merges, bos/eos/pad). Only the Llama architecture with a
GPT-2-style byte-level BPE tokenizer.json is supported; anything else raises ExecutorError.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from foundry.executors.errors import ExecutorError

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _safetensors(path: Path) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """(name, float32-or-f16 array) of one .safetensors file, read with numpy (bf16 widened)."""
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(header_len))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        start, end = info["data_offsets"]
        buf = raw[start:end]
        if info["dtype"] == "BF16":
            arr = (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _ST_DTYPES:
            arr = buf.view(_ST_DTYPES[info["dtype"]])
        else:
            raise ExecutorError(f"tensor {name} has dtype {info['dtype']}: not a float weight")
        yield name, arr.reshape(info["shape"])


def _permute(w: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """HF rotate-half Q/K rows -> llama.cpp's interleaved pairs (weights and biases)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _rope_params(cfg: dict[str, Any]) -> dict[str, Any]:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if "full_attention" in params:  # per-layer-type form
        params = params["full_attention"]
    params = dict(params)
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    params["rope_type"] = str(params.get("rope_type") or params.get("type") or "default")
    return params


def _llama3_factors(rope: dict[str, Any], head_dim: int) -> np.ndarray[Any, Any]:
    """The `rope_freqs` tensor llama.cpp uses for llama3-style rope scaling."""
    base, factor = float(rope["rope_theta"]), float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _add_rope(writer: Any, gguf: Any, rope: dict[str, Any], head_dim: int,
              notes: list[str]) -> np.ndarray[Any, Any] | None:
    kind = rope["rope_type"]
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if kind == "default":
        return None
    if kind in ("linear", "yarn"):
        writer.add_rope_scaling_type(
            gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        if rope.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        betas = (float(rope.get("beta_fast") or 32.0), float(rope.get("beta_slow") or 1.0))
        if kind == "yarn" and betas != (32.0, 1.0):  # measured: llama.cpp's llama ignores them
            notes.append(f"yarn beta_fast/beta_slow {betas} are not applied by llama.cpp, "
                         "which uses 32/1: GGUF perplexity may differ slightly from HF")
        return None
    if kind == "llama3":
        return _llama3_factors(rope, head_dim)
    if kind == "dynamic":
        notes.append("rope type 'dynamic' has no llama.cpp equivalent: GGUF written unscaled")
        return None
    raise ExecutorError(f"rope scaling {kind!r} cannot be written to GGUF by this exporter")


def _add_tokenizer(writer: Any, gguf: Any, hf_dir: Path, vocab_size: int,
                   cfg: dict[str, Any]) -> None:
    tok_file = hf_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise ExecutorError(f"no tokenizer.json in {hf_dir}: only byte-level BPE can be exported")
    tok = _read_json(tok_file)
    model, pre = tok.get("model") or {}, tok.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    byte_level = [p for p in pres if p.get("type") == "ByteLevel" and p.get("use_regex", True)]
    if model.get("type") != "BPE" or len(pres) != 1 or not byte_level:
        raise ExecutorError(
            f"tokenizer is {model.get('type')} with pre-tokenizer {pre.get('type')}: this "
            "exporter writes only GPT-2-style byte-level BPE tokenizers")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tok.get("added_tokens", [])}
    vocab.update({c: t["id"] for c, t in added.items()})
    by_id = {i: s for s, i in vocab.items()}
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if added[text].get("special")
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)

    tcfg_file = hf_dir / "tokenizer_config.json"
    tcfg = _read_json(tcfg_file) if tcfg_file.is_file() else {}
    for role, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        token = tcfg.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        tid: Any = vocab.get(token) if isinstance(token, str) else None
        if tid is None:
            tid = cfg.get(f"{role}_token_id")
            tid = tid[0] if isinstance(tid, list) and tid else tid
        if isinstance(tid, int):
            add(tid)
    post = tok.get("post_processor") or {}
    adds_bos = post.get("type") == "TemplateProcessing" and any(
        "SpecialToken" in piece for piece in post.get("single", [])[:1])
    writer.add_add_bos_token(bool(tcfg.get("add_bos_token", adds_bos)))
    writer.add_add_eos_token(bool(tcfg.get("add_eos_token", False)))
    if isinstance(tcfg.get("chat_template"), str):
        writer.add_chat_template(tcfg["chat_template"])


def check_llama(cfg: dict[str, Any]) -> None:
    """Raise ExecutorError unless `cfg` (config.json) describes a Llama model."""
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
        name = cfg.get("model_type") or (archs[0] if archs else "unknown")
        raise ExecutorError(f"GGUF export supports only the llama architecture, not {name!r}")


def export_gguf(hf_dir: Path, out_file: Path, *, outtype: Literal["f32", "f16"] = "f32",
                notes: list[str] | None = None) -> Path:
    """Write the HF Llama model in `hf_dir` to `out_file` as GGUF; return `out_file`.

    `outtype` "f16" stores matrices in f16 and keeps 1-D tensors (norms) in f32, like the
    official converter. Facts worth recording (e.g. an unrepresentable rope type) are appended
    to `notes` when given.
    """
    import gguf

    if outtype not in ("f32", "f16"):
        raise ExecutorError(f"GGUF outtype must be 'f32' or 'f16', not {outtype!r}")
    hf_dir, out_file = Path(hf_dir), Path(out_file)
    cfg = _read_json(hf_dir / "config.json")
    check_llama(cfg)
    notes = notes if notes is not None else []
    n_layer, n_head = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    shards = sorted(hf_dir.glob("*.safetensors"))
    if not shards:
        raise ExecutorError(f"no .safetensors weights in {hf_dir}")

    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
    writer = gguf.GGUFWriter(out_file, arch)
    writer.add_name(str(cfg.get("_name_or_path") or hf_dir.name))
    writer.add_context_length(int(cfg.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    ftype = gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    rope_freqs = _add_rope(writer, gguf, _rope_params(cfg), head_dim, notes)
    _add_tokenizer(writer, gguf, hf_dir, int(cfg["vocab_size"]), cfg)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    if rope_freqs is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_freqs)
    for shard in shards:
        for name, arr in _safetensors(shard):
            if name.endswith("rotary_emb.inv_freq"):
                continue
            new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise ExecutorError(f"tensor {name!r} has no GGUF name for the llama architecture")
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                arr = _permute(arr, n_head)
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                arr = _permute(arr, n_kv)
            dtype = np.float16 if outtype == "f16" and arr.ndim > 1 else np.float32
            writer.add_tensor(new_name, np.ascontiguousarray(arr, dtype=dtype))

    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file
