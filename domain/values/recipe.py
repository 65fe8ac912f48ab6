"""The authored recipe (ALLOY-FORMAT.md section 2): everything a person can know before a run.

Types that come from real alloys keep unknown fields (``Open``); the two this project defines
itself, ``CorpusRef`` and ``QuantTier``, refuse them (``Frozen``) so a typo fails loudly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from foundry.domain.values.base import Frozen, Number, Open, SemVer, Sha256
from foundry.domain.values.stages import BenchmarkDef, QuantFormat, Stage


class AlloySource(Open):
    """The base model a recipe forges from."""

    base_model: str
    architecture: str
    revision: str | None = None
    is_moe: bool = Field(default=False, alias="isMoE")
    total_experts: int | None = None


class CorpusRef(Frozen):
    """A pointer to a calibration corpus: the bytes live elsewhere, pinned by hash."""

    name: str = Field(min_length=1)
    content_hash: Sha256
    size_bytes: int = Field(ge=0)
    source_url: str | None = None


class QuantTier(Frozen):
    """One published quantization format and the variants shipped in it."""

    format: QuantFormat
    variants: list[str]
    target_devices: list[str] = []


# (attribute, wire name) of the strict baseline shape: what the gate needs of a baseline.
STRICT_BASELINE_FIELDS = (("metric", "metric"), ("value", "value"), ("source", "source"),
                          ("measured_at", "measuredAt"),
                          ("measurement_method", "measurementMethod"))


class PriorBaseline(Open):
    """A baseline pinned to the recipe so a reader can falsify its claim.

    Two shapes are accepted. The strict one is {metric, value, source, measuredAt,
    measurementMethod}. The legacy one is looser: {id?, name?, metric? (a string or an object),
    evaluation?, prune?, results?, samplesPath?, outcome?, supersededBy?, methodologyAnchor?,
    notes?}. Either way a baseline must say what it is: a ``metric``, an ``id`` or a ``name``.
    """

    metric: str | dict[str, Any] | None = None
    value: Number | None = None
    source: str | None = None
    measured_at: str | None = None
    measurement_method: str | None = None
    id: str | None = None
    name: str | None = None
    evaluation: dict[str, Any] | None = None
    prune: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    samples_path: str | None = None
    outcome: Literal["shipped", "negative_baseline", "superseded"] | None = None
    superseded_by: str | None = None
    methodology_anchor: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _names_what_it_measures(self) -> PriorBaseline:
        if self.metric is None and self.id is None and self.name is None:
            msg = "a prior baseline needs a 'metric' (strict shape) or an 'id' or 'name' (legacy)"
            raise ValueError(msg)
        if self.gating:
            # A baseline the gate compares against must carry everything the comparison and
            # a reader's check of it need: with one left out the gate used to skip it
            # silently, so a claim could dodge its own baseline.
            missing = [wire for attr, wire in STRICT_BASELINE_FIELDS
                       if getattr(self, attr) is None or getattr(self, attr) == ""]
            if missing or not isinstance(self.metric, str):
                named = ", ".join(missing or ["metric"])
                msg = (f"a gating baseline (one with a metric name, value, source, measuredAt "
                       f"or measurementMethod) needs all five; missing or invalid: {named}. A "
                       "legacy record that documents history names itself by 'id' or 'name' "
                       "and has no 'value' (it never gates)")
                raise ValueError(msg)
        return self

    @property
    def gating(self) -> bool:
        """Whether the gate compares against this baseline: the strict shape, or anything
        that starts to look like it. A legacy record (metric absent or an object, no value,
        source, measuredAt or measurementMethod) documents history and never gates."""
        return isinstance(self.metric, str) or any(
            getattr(self, attr) is not None for attr, _ in STRICT_BASELINE_FIELDS[1:])


class AlloyHardware(Open):
    """What the forge run needs and where it was tried."""

    min_vram_gb: Number | None = Field(default=None, ge=0)
    recommended_vram_gb: Number | None = Field(default=None, ge=0)
    estimated_duration_minutes: Number | None = Field(default=None, ge=0)
    supports_cpu: bool = Field(default=False, alias="supportsCPU")
    tested_on: list[str] = []
    device_targets: list[str] = []


class BenchmarkAcceptance(Open):
    """The bar one benchmark must clear: an absolute floor and an optional anchor delta."""

    min: Number = Field(ge=0, le=1)
    anchor_delta: Number | None = None
    anchor_benchmark: str | None = None
    notes: str | None = None


class AcceptanceHardware(Open):
    """The hardware the forged model must fit."""

    max_vram_gb: Number | None = Field(default=None, ge=0)
    device_tier: str | None = None


class AcceptanceIntegrity(Open):
    """The chain-of-custody evidence an artifact must carry."""

    model_hash_required: bool = False
    samples_path_required: bool = False


class AcceptanceCriteria(Open):
    """The gate a forged model must clear before it ships."""

    benchmarks: dict[str, BenchmarkAcceptance] = {}
    hardware: AcceptanceHardware | None = None
    integrity: AcceptanceIntegrity | None = None
    notes: str | None = None


class SearchStrategy(Open):
    """How the forge searches for the best configuration within the constraints."""

    method: Literal["manual", "binary", "ransac", "bayesian", "exhaustive", "adaptive"] = "manual"
    quick_eval_chunks: int = Field(default=10, ge=1, le=50)
    max_candidates: int = Field(default=5, ge=1, le=20)
    confidence_threshold: Number = Field(default=0.95, ge=0.5, le=0.999)
    try_compensation_lora: bool = False
    lora_steps_if_needed: int = Field(default=500, ge=100, le=5000)
    coverage_threshold: Number = Field(default=0.85, ge=0.5, le=0.99)
    notes: str | None = None


class ForgeRecipe(Open):
    """Everything a person can know before a run: the authored input of a forge.

    Unknown top-level fields of real alloys are kept in ``model_extra`` and written back out.
    """

    id: str | None = None
    name: str = Field(min_length=1)
    version: SemVer
    description: str = ""
    user_summary: str = ""
    author: str = ""
    tags: list[str] = []
    license: str = "apache-2.0"
    methodology_paper_url: str | None = None
    limitations: list[str] = []
    prior_metric_baselines: list[PriorBaseline] = []
    source: AlloySource
    target: dict[str, Any] | None = None
    stages: list[Stage] = []
    cycles: int = Field(default=1, ge=1)
    calibration_corpus: CorpusRef | None = None
    quant_tiers: list[QuantTier] = []
    evaluation_benchmarks: list[BenchmarkDef] = []
    hardware: AlloyHardware = AlloyHardware()
    search: SearchStrategy | None = None
    outputs: dict[str, Any] | None = None
    acceptance_criteria: AcceptanceCriteria | None = None
    parent_recipe_id: str | None = None
    # A derived model carries its base model's license unless the recipe overrides it, with
    # the reason (Qwen derivatives must honour the base's terms). Absent = inherit.
    license_strategy: Literal["inherit_from_source", "override"] | None = None
    license_reason: str | None = Field(default=None, min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _override_says_why(self) -> ForgeRecipe:
        if self.license_strategy == "override" and not self.license_reason:
            msg = ("licenseReason: required when licenseStrategy is 'override' (why this "
                   "derived model may be published under another license than its base's)")
            raise ValueError(msg)
        return self


RECIPE_FIELDS: frozenset[str] = frozenset(
    field.alias or name for name, field in ForgeRecipe.model_fields.items()
)
"""The wire (camelCase) names of the authored recipe fields."""
