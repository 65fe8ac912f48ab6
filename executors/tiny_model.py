"""Build a tiny, untrained Llama model and its tokenizer locally, with no download.

`build_tiny_llama` trains a GPT-2-style byte-level BPE tokenizer on a corpus file with
`tokenizers`, creates a `LlamaForCausalLM` initialised from a fixed seed, and saves both with
`save_pretrained` (safetensors). Two builds with the same arguments and corpus give
byte-identical files. The defaults (hidden 256, intermediate 768) are multiples of 256, so
llama.cpp's K-quants apply to every matrix instead of falling back to Q5_0/Q8_0.

torch, transformers and tokenizers are imported inside the functions: importing this module
costs nothing and works without the `ml` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOS_EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"


def train_bpe_tokenizer(corpus_file: Path, vocab: int) -> Any:
    """A byte-level BPE tokenizer (the GPT-2 pre-tokenizer regex) trained on `corpus_file`.

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
    corpus_file: Path,
    *,
    hidden: int = 256,
    intermediate: int = 768,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 1024,
    seed: int = 0,
    max_positions: int = 256,
) -> Path:
    """Save an untrained, seeded `LlamaForCausalLM` and a BPE tokenizer into `out_dir`.

    `out_dir` (created if needed) receives config.json, generation_config.json,
    model.safetensors (fp32), tokenizer.json and tokenizer_config.json. The caller's torch
    random state is left as it was. Returns `out_dir`.
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    corpus_file = Path(corpus_file)
    if not corpus_file.is_file():
        raise FileNotFoundError(f"corpus file not found: {corpus_file}")

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_bpe_tokenizer(corpus_file, vocab)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.float32)
    model.eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
