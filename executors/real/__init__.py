"""The real executors: torch, transformers and peft doing each stage on a local model.

Importing this package imports no ML library: every module imports torch, transformers and
peft inside the functions that need them. `build_registry()` assembles the worker's registry:
prune, train, lora, context-extend, source-config and the compaction stages
(expert-activation-profile, expert-prune, compensation-lora, compact) from here, quant and eval from
`foundry.executors.real.quant` and `foundry.executors.real.evaluate`, `resolve_source` as the
source resolver, the best device, the architectures `foundry.executors.architectures` knows
(any other is refused up front) and the stage types refused by design, with their reasons.

Importing it also sets `OMP_WAIT_POLICY=PASSIVE` unless the environment says otherwise: on a
shared 2-core machine, torch's OpenMP threads spinning against other processes made a
training step 10-30x slower (0.18 s -> 4-7 s on the tiny model). It only takes effect if
torch has not been imported yet, so import this package first.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from foundry.executors.real.activation_profile import ExpertActivationProfileExecutor
from foundry.executors.real.compact import CompactExecutor
from foundry.executors.real.compensation_lora import CompensationLoraExecutor
from foundry.executors.real.context_extend import ContextExtendExecutor
from foundry.executors.real.expert_prune import ExpertPruneExecutor
from foundry.executors.real.lora import LoraExecutor
from foundry.executors.real.prune import PruneExecutor
from foundry.executors.real.source_config import SourceConfigExecutor
from foundry.executors.real.sources import resolve_source
from foundry.executors.real.train import TrainExecutor
from foundry.executors.registry import ExecutorRegistry

__all__ = [
    "CompactExecutor",
    "CompensationLoraExecutor",
    "ContextExtendExecutor",
    "ExpertActivationProfileExecutor",
    "ExpertPruneExecutor",
    "LoraExecutor",
    "PruneExecutor",
    "SourceConfigExecutor",
    "TrainExecutor",
    "build_registry",
    "resolve_source",
]


def _import(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ImportError(
            f"the real executor registry needs {module}.{name}, which could not be imported "
            f"({e}); is the `ml` extra installed and {module} present?"
        ) from e
    except AttributeError as e:
        raise ImportError(f"{module} defines no {name}; the real registry needs it") from e


REFUSED_STAGES = {
    "modality": "grafting a vision or audio encoder needs the encoder and paired multimodal "
                "training data; no executor here does it",
    "deploy": "deployment targets infrastructure outside the foundry; a run ends at a sealed "
              "artifact, which publish hands on",
}
"""Stage types the real registry refuses up front, by design, with the reason given."""


def architecture_problem(name: str) -> str | None:
    """Why `source.architecture` cannot be forged by the real executors, or None."""
    from foundry.executors.architectures import lookup, supported

    if lookup(name) is not None:
        return None
    return (f"architecture {name!r} is not supported by the real executors; supported: "
            f"{', '.join(supported())}")


def build_registry() -> ExecutorRegistry:
    """A registry of every real executor, with `resolve_source` and the best device."""
    from foundry.executors.real.common import pick_device

    quant_executor = _import("foundry.executors.real.quant", "QuantExecutor")
    eval_executor = _import("foundry.executors.real.evaluate", "EvalExecutor")
    known_benchmarks = _import("foundry.executors.real.evaluate", "KNOWN_BENCHMARKS")
    data_file_benchmarks = _import("foundry.executors.real.evaluate", "DATA_FILE_BENCHMARKS")
    return ExecutorRegistry(
        (
            PruneExecutor(),
            TrainExecutor(),
            LoraExecutor(),
            ContextExtendExecutor(),
            SourceConfigExecutor(),
            ExpertActivationProfileExecutor(),
            ExpertPruneExecutor(),
            CompensationLoraExecutor(),
            CompactExecutor(),
            quant_executor(),
            eval_executor(),
        ),
        known_benchmarks=known_benchmarks,
        data_file_benchmarks=data_file_benchmarks,
        source_resolver=resolve_source,
        device=pick_device(),
        architecture_check=architecture_problem,
        refused=REFUSED_STAGES,
    )
