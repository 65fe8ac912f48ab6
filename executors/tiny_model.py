"""Build a tiny, untrained Llama model on a real tokenizer locally, with no download.

`build_tiny_llama` creates a `LlamaForCausalLM` initialised from a fixed seed, on one of the
real tokenizers that `foundry.executors.real.known_tokenizers` rebuilds offline (SmolLM2's by
default), and saves both with `save_pretrained` (safetensors). Two builds with the same
arguments give byte-identical files. The defaults (hidden 256, intermediate 768) are multiples
of 256, so llama.cpp's K-quants apply to every matrix instead of falling back to Q5_0/Q8_0.

Why a real tokenizer and not one trained here: llama.cpp's GGUF converter recognises a BPE
tokenizer by a hash of how it pre-tokenizes, and refuses one it does not know. SmolLM2's 49,152
tokens are the smallest real vocabulary on hand (Qwen3's is 151,669): its embedding is tied to
the output head, as in SmolLM2 itself, which keeps the model at 15.7M parameters.

torch and transformers are imported inside the functions: importing this module costs nothing
and works without the `ml` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_TOKENIZER = "smollm2"
BOS_EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"


def train_bpe_tokenizer(corpus_file: Path, vocab: int) -> Any:
    """A byte-level BPE tokenizer (the GPT-2 pre-tokenizer regex) trained on `corpus_file`.

    For tests that need a small vocabulary and never export GGUF: llama.cpp's converter does
    not recognise a tokenizer trained here (see the module docstring).

    Returns a `transformers.PreTrainedTokenizerFast` with `<|endoftext|>` as BOS/EOS and
    `<pad>` as padding. Its vocabulary holds the 256 byte symbols, the two special tokens and
    merges up to `vocab` entries in all.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab < 258 + 1:
        raise ValueError(f"vocab must exceed the 256 byte symbols and 2 special tokens: {vocab}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[BOS_EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus_file)], trainer)
    fast_cls: Any = PreTrainedTokenizerFast  # untyped in transformers; keep mypy strict quiet
    return fast_cls(
        tokenizer_object=tok,
        bos_token=BOS_EOS_TOKEN,
        eos_token=BOS_EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )


def build_tiny_llama(
    out_dir: Path,
    *,
    tokenizer: str = DEFAULT_TOKENIZER,
    hidden: int = 256,
    intermediate: int = 768,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    max_positions: int = 256,
) -> Path:
    """Save an untrained, seeded `LlamaForCausalLM` and the known tokenizer `tokenizer` into
    `out_dir`.

    `out_dir` (created if needed) receives config.json, generation_config.json,
    model.safetensors (fp32), tokenizer.json and tokenizer_config.json. The vocabulary is the
    tokenizer's. The caller's torch random state is left as it was. Returns `out_dir`.
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from foundry.executors.real.known_tokenizers import copy_tokenizer, load_tokenizer

    tok = load_tokenizer(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.float32)
    model.eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    copy_tokenizer(tokenizer, out_dir)
    return out_dir
