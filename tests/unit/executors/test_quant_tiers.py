"""What a quant stage says it will write, before a run (forge/run checks an eval's `gguf`
tier against it): the real one writes the requested types plus its base export, the fake one
the requested types (else Q8_0), exactly the files their `run` writes (model-<TYPE>.gguf)."""

from __future__ import annotations

import pytest

from foundry.executors.errors import ExecutorError
from foundry.executors.fake import build_fake_registry
from foundry.executors.real.quant import QuantExecutor
from foundry.executors.registry import ExecutorRegistry

TIERS = {"quantTiers": [{"format": "gguf", "variants": ["q5_k_m"]}]}


def test_the_real_quant_writes_the_requested_types_and_its_base_export() -> None:
    quant = QuantExecutor()
    assert quant.produced_tiers({"quantTypes": ["q4_k_m"]}, {}) == {"Q4_K_M", "F32"}
    assert quant.produced_tiers({"quantTypes": ["F16", "Q8_0"]}, TIERS) == {
        "F16", "Q8_0", "Q5_K_M"}  # F16 asked for: the base export is f16, no F32
    assert quant.produced_tiers({"outtype": "f16"}, {}) == {"F16"}
    with pytest.raises(ExecutorError, match="outtype must be 'f32' or 'f16'"):
        quant.produced_tiers({"outtype": "bf16"}, {})


def test_the_registry_answers_none_where_the_stage_itself_is_invalid() -> None:
    registry = ExecutorRegistry([QuantExecutor()])
    assert registry.produced_tiers({"quantTypes": ["Q8_0"]}, {}) == {"Q8_0", "F32"}
    assert registry.produced_tiers({"format": "onnx"}, {}) is None  # its stage says why
    assert ExecutorRegistry().produced_tiers({}, {}) is None  # no quant executor here
    fake = build_fake_registry()
    assert fake.produced_tiers({}, {}) == {"Q8_0"}
    assert fake.produced_tiers({"quantTypes": ["Q4_K_M"]}, TIERS) == {"Q4_K_M", "Q5_K_M"}
