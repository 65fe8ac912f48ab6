"""Shared helpers of the real executors: device, seeds, loading and saving HF models.

torch and transformers are imported inside the functions, so importing this module is free.
Models are loaded in float32 (the master weights); lower precision is an autocast decision a
stage makes through `precision_note`. `save_model` writes safetensors through
`save_pretrained`, which is deterministic: the same weights give byte-identical files.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from foundry.executors.base import StageContext
from foundry.executors.errors import ExecutorError

_M = TypeVar("_M", bound=BaseModel)


def configure_torch() -> None:
    """Use every CPU core for torch's intra-op threads (idempotent)."""
    import torch

    cores = os.cpu_count() or 1
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)


def quiet_transformers() -> None:
    """No tqdm progress bars from transformers (loading, saving, GGUF dequantizing)."""
    from transformers.utils import logging as hf_logging

    logging_module: Any = hf_logging  # untyped
    logging_module.disable_progress_bar()


def pick_device() -> str:
    """"cuda" when a CUDA device is usable, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    import numpy as np
    import torch

    configure_torch()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def stage_seed(ctx: StageContext) -> int:
    """A seed for one stage of one cycle: distinct per stage, fixed for a given run seed."""
    return ctx.seed * 1_000_003 + ctx.cycle * 1_000 + ctx.index


def parse_stage(model: type[_M], stage: Mapping[str, Any]) -> _M:
    """`stage` (wire form) validated through its pydantic model, defaults filled in."""
    try:
        return model.model_validate(dict(stage))
    except ValidationError as e:
        raise ExecutorError(f"invalid {stage.get('type', '?')} stage: {e}") from e


def load_model(
    model_dir: Path, *, device: str = "cpu", attn_implementation: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local save_pretrained directory; float32 weights, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    configure_torch()
    quiet_transformers()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ExecutorError(f"no model in {model_dir}: config.json is missing")
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    auto: Any = AutoModelForCausalLM  # untyped in transformers
    model = auto.from_pretrained(model_dir, **kwargs)
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Write `model` (safetensors) and `tokenizer` into `out_dir`; return `out_dir`.

    Weights are made contiguous first (pruning leaves views behind); `save_pretrained` writes
    tensors sorted by name with fixed metadata, so equal weights give equal bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for param in model.parameters():
        if not param.data.is_contiguous():
            param.data = param.data.contiguous()
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def param_count(model: Any) -> int:
    """Number of parameters (tied weights counted once)."""
    return int(sum(p.numel() for p in model.parameters()))


def trainable_count(model: Any) -> int:
    """Number of parameters that require a gradient."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def precision_note(requested: str, device: str) -> tuple[Any, str | None]:
    """(torch dtype to autocast to, or float32; a note when the request could not be met).

    bf16 needs a CUDA device that supports it, fp16 a CUDA device; anything else runs fp32
    and says so, e.g. "precision bf16 unavailable on cpu: ran fp32".
    """
    import torch

    if requested == "fp32":
        return torch.float32, None
    if device.startswith("cuda") and torch.cuda.is_available():
        if requested == "bf16" and torch.cuda.is_bf16_supported():
            return torch.bfloat16, None
        if requested == "fp16":
            return torch.float16, None
    if requested not in ("bf16", "fp16"):
        return torch.float32, f"precision {requested} unknown: ran fp32"
    return torch.float32, f"precision {requested} unavailable on {device}: ran fp32"


def max_positions(model: Any) -> int:
    """The model's max_position_embeddings (a large number when it declares none)."""
    value = getattr(model.config, "max_position_embeddings", None)
    return int(value) if value else 1 << 20
