"""The stage catalogue of a recipe (ALLOY-FORMAT.md section 3), one model per stage type.

Stages are a discriminated union on ``type``: an unknown type fails with pydantic's
``union_tag_invalid`` error, which names the allowed tags. Every variant takes an optional
``notes`` string (the methodology blockquote of the model card) and keeps fields it does not
know, because real alloys carry them.

Where the catalogue names no default for an enum, the default is the one the upstream
forge-alloy reference types use (train ``scheduler="cosine"``, ``precision="bf16"``; modality
``projectionArch="mlp"``; lora ``quantizeBits=4``; expert-activation-profile
``metric="activation_count"``; compensation-lora ``lossType="kl_logits"``). Other fields the
catalogue gives neither a default nor a ``?`` are required. This module holds data only:
nothing here decides how a stage runs.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from foundry.domain.values.base import Number, Open

QuantFormat = Literal["gguf", "mlx", "safetensors", "onnx"]


def _check_learning_rate(value: str) -> str:
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not (math.isfinite(parsed) and parsed > 0):
        msg = "must be a positive number written as a string, e.g. '2e-4'"
        raise ValueError(msg)
    return value


LearningRate = Annotated[str, AfterValidator(_check_learning_rate)]
"""A learning rate as the wire writes it: a string such as ``"2e-4"`` that parses as > 0."""


class BenchmarkDef(Open):
    """A benchmark to run: name, optional subset and shot count, where its samples go."""

    name: str
    subset: str | None = None
    n_shot: int | None = Field(default=None, ge=0)
    submit_to_leaderboard: bool = False
    samples_path: str | None = None
    base_samples_path: str | None = None
    calibration_anchor: dict[str, Any] | None = None
    notes: str | None = None


class _Stage(Open):
    # `type` is declared here (and narrowed to a Literal by every variant) so that it comes
    # first in the serialized form, where a reader looks for it.
    type: str
    notes: str | None = None


class SourceConfigStage(_Stage):
    """Front bookend: what the forged model must support."""

    type: Literal["source-config"] = "source-config"
    context_length: int | None = None
    input_modalities: list[str] = []
    tokenizer: str | None = None
    target_batch_size: int | None = None
    target_devices: list[str] = []


class ContextExtendStage(_Stage):
    """Extend the context window (YaRN, NTK, ...)."""

    type: Literal["context-extend"] = "context-extend"
    target_length: int = Field(ge=1024)
    method: Literal["yarn", "ntk", "linear", "dynamic-ntk"]
    training_dataset: str | None = None
    training_steps: int | None = None


class ModalityStage(_Stage):
    """Graft an encoder (vision, audio) onto the base through a projection."""

    type: Literal["modality"] = "modality"
    modality: Literal["vision", "audio", "multimodal"]
    encoder_model: str
    projection_arch: Literal["mlp", "cross-attention", "linear"] = "mlp"
    freeze_base: bool = True
    freeze_encoder: bool = True
    training_dataset: str | None = None
    training_steps: int | None = None
    projection_dim: int | None = None


class PruneStage(_Stage):
    """Remove attention heads by an importance strategy."""

    type: Literal["prune"] = "prune"
    strategy: Literal[
        "entropy",
        "magnitude",
        "gradient",
        "random",
        "activation-magnitude",
        "calibration-aware-activation-count",
        "per-layer-normalized-router-importance",
    ]
    level: Number = Field(ge=0, le=0.9)
    min_heads_per_layer: int = 4
    min_kv_heads_per_layer: int = 2
    analysis_steps: int = 200
    per_layer_normalized: bool | None = None
    defrag_mode: str | None = None


class TrainStage(_Stage):
    """Full fine-tuning on a dataset."""

    type: Literal["train"] = "train"
    domain: str | None = None
    dataset: str | None = None
    steps: int | None = Field(default=None, ge=1)
    learning_rate: LearningRate | None = None
    batch_size: int = Field(default=4, ge=1, le=64)
    gradient_accumulation: int = Field(default=1, ge=1, le=16)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "polynomial"] = (
        "cosine"
    )
    warmup_ratio: Number = Field(default=0.03, ge=0, le=1)
    weight_decay: Number = Field(default=0.01, ge=0, le=1)
    max_gradient_norm: Number = Field(default=1.0, ge=0, le=10)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    sequence_length: int = Field(default=2048, ge=128, le=131072)
    optimizations: list[str] = []


class LoraStage(_Stage):
    """Low-rank adapter training, optionally merged back into the weights."""

    type: Literal["lora"] = "lora"
    rank: int = Field(default=32, ge=1, le=256)
    alpha: int | None = Field(default=None, ge=1, le=512)
    dropout: Number = Field(default=0.05, ge=0, le=1)
    # The catalogue's (q_proj, k_proj, v_proj, o_proj) is the default list, not an enum:
    # real alloys also target gate_proj, up_proj and down_proj.
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    quantize: bool = True
    quantize_bits: Literal[4, 8] = 4
    dataset: str | None = None
    epochs: int = Field(default=3, ge=1, le=20)
    learning_rate: LearningRate = "1e-4"
    batch_size: int = Field(default=4, ge=1, le=64)
    merge_after: bool = False


class CompactStage(_Stage):
    """Classify components by activity (dead .. high) and shrink the dormant ones."""

    type: Literal["compact"] = "compact"
    dead_threshold: Number = Field(default=0.1, ge=0, le=1)
    dormant_threshold: Number = Field(default=0.2, ge=0, le=1)
    low_threshold: Number = Field(default=0.3, ge=0, le=1)
    medium_threshold: Number = Field(default=0.5, ge=0, le=1)
    high_threshold: Number = Field(default=0.7, ge=0, le=1)
    target_size_gb: Number | None = None
    enable_quantization: bool = True


class ExpertActivationProfileStage(_Stage):
    """Profile MoE expert importance on a calibration corpus (feeds expert-prune)."""

    type: Literal["expert-activation-profile"] = "expert-activation-profile"
    calibration_corpus: str
    metric: Literal["activation_count", "router_l2", "activation_magnitude"] = "activation_count"
    max_length: int = Field(default=2048, ge=128)
    device: str | None = None
    importance_output: str | None = None


class ExpertPruneStage(_Stage):
    """Drop MoE experts; the ``experts*`` and ``routerSlicedLayers`` fields are run-written."""

    type: Literal["expert-prune"] = "expert-prune"
    keep_experts: int | None = None
    keep_experts_per_layer: int | None = None
    original_experts_per_layer: int | None = None
    strategy: str | None = None
    selection_strategy: str | None = None
    metric: str | None = None
    metric_source: str | None = None
    profile_dataset: str | None = None
    profile_steps: int = 100
    importance_json: str | None = None
    expert_tensor_layout: Literal[
        "auto",
        "mlp-experts-unfused",
        "block_sparse_moe-unfused",
        "granite-moe-fused",
        "deepseek-routed-shared",
    ] = "auto"
    calibration_corpus: str | None = None
    per_layer_normalized: bool | None = None
    prune_pct: Number | None = None
    experts_dropped: int | None = None
    experts_renamed: int | None = None
    router_sliced_layers: int | None = None
    implementation: str | None = None
    rationale: str | None = None


class CompensationLoraStage(_Stage):
    """Distil a teacher into a LoRA that compensates for pruning damage."""

    type: Literal["compensation-lora"] = "compensation-lora"
    teacher: str
    calibration_corpus: str
    loss_type: Literal["kl_logits", "mse_hidden", "both"] = "kl_logits"
    kd_temperature: Number = 2.0
    lora_rank: int = 16
    lora_alpha: int = 32
    target_modules: list[str] = []
    steps: int = 500
    learning_rate: LearningRate = "1e-4"
    teacher_quant: Literal["8bit", "4bit", "fp16"] | None = None
    student_quant: Literal["fp16", "4bit", "8bit"] | None = None
    merged_at_save: bool = True


class QuantStage(_Stage):
    """Quantize into one format and a set of quant types."""

    type: Literal["quant"] = "quant"
    format: QuantFormat
    quant_types: list[str]
    device_targets: list[str] = []


class EvalStage(_Stage):
    """Run benchmarks, by default against the base model too."""

    type: Literal["eval"] = "eval"
    benchmarks: list[BenchmarkDef]
    passing_threshold: Number | None = None
    compare_to_base: bool = True
    calibration_anchor: dict[str, Any] | None = None


class PackageStage(_Stage):
    """End bookend: device-specific packaging."""

    type: Literal["package"] = "package"
    format: str
    runtime: str | None = None
    optimization: str = "balanced"
    validate_on: list[str] = []
    include_tokenizer: bool = True


class PublishStage(_Stage):
    """Publish the forged model and its cards to an organisation on the hub."""

    type: Literal["publish"] = "publish"
    # Optional: a stage migrated from the legacy `deliver` type names no organisation; the
    # publish target given to forge/run or forge/publish decides where it goes.
    org: str | None = None
    # Or a whole target URL (`hf://org/repo`, `file:///dir`), which wins over `org`.
    target: str | None = None
    repo_name_template: str = "{base}-{domain}-forged"
    include_alloy: bool = True
    card_from_benchmarks: bool = True
    tags: list[str] = []
    private: bool = False
    card_hash: str | None = None


class DeployStage(_Stage):
    """End bookend: deploy to a serving node."""

    type: Literal["deploy"] = "deploy"
    target: str
    health_check: bool = True
    warmup: bool = True
    max_concurrency: int | None = None
    auto_scale: bool | None = None


# Research stages of the format: accepted, validated by type and preserved field for field
# (Open keeps everything beyond `type` and `notes`).


class ManyWorldsSubstrateStage(_Stage):
    """Research stage: train a shared substrate several frozen models project into."""

    type: Literal["many-worlds-substrate"] = "many-worlds-substrate"


class ManyWorldsAdapterStage(_Stage):
    """Research stage: train one model's adapter against a fixed substrate."""

    type: Literal["many-worlds-adapter"] = "many-worlds-adapter"


class ManyWorldsEnsembleStage(_Stage):
    """Research stage: blend the logits of specialist models."""

    type: Literal["many-worlds-ensemble"] = "many-worlds-ensemble"


class TeamSearchStage(_Stage):
    """Research stage: search a pool for a complementary team of models."""

    type: Literal["team-search"] = "team-search"


class GateProfileStage(_Stage):
    """Research stage: profile which specialist contributes on which inputs."""

    type: Literal["gate-profile"] = "gate-profile"


class PopulationPruneStage(_Stage):
    """Research stage: remove specialists that do not earn their memory."""

    type: Literal["population-prune"] = "population-prune"


class CvIngestStage(_Stage):
    """Research stage: ingest a computer-vision dataset."""

    type: Literal["cv-ingest"] = "cv-ingest"


class CvEvalStage(_Stage):
    """Research stage: evaluate a computer-vision pipeline."""

    type: Literal["cv-eval"] = "cv-eval"


STAGE_MODELS: tuple[type[_Stage], ...] = (
    SourceConfigStage,
    ContextExtendStage,
    ModalityStage,
    PruneStage,
    TrainStage,
    LoraStage,
    CompactStage,
    ExpertActivationProfileStage,
    ExpertPruneStage,
    CompensationLoraStage,
    QuantStage,
    EvalStage,
    PackageStage,
    PublishStage,
    DeployStage,
    ManyWorldsSubstrateStage,
    ManyWorldsAdapterStage,
    ManyWorldsEnsembleStage,
    TeamSearchStage,
    GateProfileStage,
    PopulationPruneStage,
    CvIngestStage,
    CvEvalStage,
)
"""Every stage model, in the catalogue's order."""

STAGE_TYPES: tuple[str, ...] = tuple(
    str(model.model_fields["type"].default) for model in STAGE_MODELS
)
"""The wire names of every stage type, in the catalogue's order."""

Stage = Annotated[
    SourceConfigStage
    | ContextExtendStage
    | ModalityStage
    | PruneStage
    | TrainStage
    | LoraStage
    | CompactStage
    | ExpertActivationProfileStage
    | ExpertPruneStage
    | CompensationLoraStage
    | QuantStage
    | EvalStage
    | PackageStage
    | PublishStage
    | DeployStage
    | ManyWorldsSubstrateStage
    | ManyWorldsAdapterStage
    | ManyWorldsEnsembleStage
    | TeamSearchStage
    | GateProfileStage
    | PopulationPruneStage
    | CvIngestStage
    | CvEvalStage,
    Field(discriminator="type"),
]
"""One stage of a recipe, chosen by its ``type``."""
