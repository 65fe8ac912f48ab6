"""The forge's output (ALLOY-FORMAT.md section 4): everything only a run can know.

An artifact is never authored. It carries its recipe's identity, a frozen snapshot of the
recipe's authored fields (stages and cycles included, so lineage survives), and what the run
measured, published and attested. All types keep unknown fields. Only ``id``, ``recipeId`` and
``recipeVersion`` are required at the top; inside list entries, the fields section 4 writes
without ``?`` are required. The hashes section 5 defines (alloyHash, modelHash, cardHash) must
be ``sha256:<hex>``; hashes copied from elsewhere (result and dataset hashes) are plain strings.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import Field

from foundry.domain.values.base import Open, SemVer, Sha256
from foundry.domain.values.recipe import (
    AcceptanceCriteria,
    AlloyHardware,
    AlloySource,
    CorpusRef,
    PriorBaseline,
    QuantTier,
)
from foundry.domain.values.stages import BenchmarkDef, Stage

RECIPE_SNAPSHOT_FIELDS: tuple[str, ...] = (
    "description",
    "userSummary",
    "author",
    "tags",
    "license",
    "methodologyPaperUrl",
    "limitations",
    "priorMetricBaselines",
    "source",
    "calibrationCorpus",
    "quantTiers",
    "evaluationBenchmarks",
    "hardware",
    "stages",
    "cycles",
    "acceptanceCriteria",
    "parentRecipeId",
    "licenseStrategy",
    "licenseReason",
)
"""The recipe fields (wire names) an artifact freezes a copy of. The bar it was judged by
(acceptanceCriteria) and its lineage (parentRecipeId) are part of what was forged: without
them an artifact read alone cannot be checked against its own gate or traced to its parent."""


class ArtifactDocument(TypedDict, total=False):
    """A ForgeArtifact as the JSON document the views store and publishing, cards and verify
    read (wire names). `ForgeArtifact` validates one at the edges (import, the HTTP contract);
    inside, code passes this typed dict, so mypy checks every key it reads. An imported alloy
    may carry more top-level keys than these: they are kept, and nothing reads them by name."""

    id: str
    recipeId: str
    recipeVersion: str
    recipeName: str
    name: str  # a legacy alloy's name for what is now recipeName
    description: str
    userSummary: str
    author: str
    tags: list[str]
    license: str
    methodologyPaperUrl: str
    limitations: list[str]
    priorMetricBaselines: list[dict[str, Any]]
    source: dict[str, Any]
    calibrationCorpus: dict[str, Any]
    quantTiers: list[dict[str, Any]]
    evaluationBenchmarks: list[dict[str, Any]]
    hardware: dict[str, Any]
    stages: list[dict[str, Any]]
    cycles: int
    acceptanceCriteria: dict[str, Any]
    parentRecipeId: str
    licenseStrategy: str
    licenseReason: str
    forgedAt: str
    hardwareNode: str
    durationMinutes: float
    forgedParamsB: float
    activeParamsB: float
    hardwareVerified: list[dict[str, Any]]
    results: dict[str, Any]
    provenance: dict[str, Any]
    rehearsal: dict[str, Any]
    alloyHash: str
    receipt: dict[str, Any]
    integrity: dict[str, Any]


class HardwareVerified(Open):
    """How the forged model ran on one device in one format."""

    device: str
    format: str
    vram_gb: float | None = Field(default=None, ge=0)
    size_gb: float | None = Field(default=None, ge=0)
    tokens_per_sec: float | None = Field(default=None, ge=0)
    memory_usage_gb: float | None = Field(default=None, ge=0)
    verified: bool = False


class BenchmarkResult(Open):
    """One benchmark's outcome, against the base model where it was measured."""

    name: str
    subset: str | None = None
    metric: str | None = None
    score: float | None = None
    base_score: float | None = None
    delta: float | None = None
    calibrated: bool | None = None
    samples_path: str | None = None
    base_samples_path: str | None = None
    result_hash: str | None = None
    base_result_hash: str | None = None
    metrics: dict[str, Any] = {}
    submitted_to_leaderboard: bool = False


class Sample(Open):
    """A raw completion, next to the base model's where there is one."""

    label: str
    prompt: str
    completion: str
    baseline_completion: str | None = None


class Results(Open):
    """What the run measured."""

    completed_at: str | None = None
    duration_minutes: float | None = Field(default=None, ge=0)
    baseline_perplexity: float | None = None
    final_perplexity: float | None = None
    improvement_pct: float | None = None
    final_size_gb: float | None = Field(default=None, ge=0)
    final_params: str | int | float | None = None
    benchmarks: list[BenchmarkResult] = []
    samples: list[Sample] = []


class Publication(Open):
    """One place the artifact was published."""

    target: str
    url: str
    published_at: str


class Receipt(Open):
    """Proof of delivery: where the artifact went and what was published."""

    publications: list[Publication] = []
    verify_url: str | None = None
    alloy_hash: Sha256 | None = None
    card_hash: Sha256 | None = None
    issued_at: str | None = None


class CodeAttestation(Open):
    """The code that produced the results."""

    runner: str
    version: str
    binary_hash: str
    source_hash: str | None = None
    commit: str | None = None
    environment: str | None = None
    environment_hash: str | None = None


class DatasetAttestation(Open):
    """A dataset the evaluation read, pinned by hash."""

    name: str
    version: str | None = None
    hash: str
    source: str | None = None


class AttestationSignature(Open):
    """The signature over the attestation payload (ES256, base64url)."""

    algorithm: str
    public_key: str
    value: str
    key_id: str | None = None


class Integrity(Open):
    """The integrity attestation of a run.

    A self-attested signature proves the payload was not altered since signing; it says
    nothing about the honesty of the signer.
    """

    trust_level: Literal["self-attested", "verified", "enclave"] | None = None
    code: CodeAttestation | None = None
    model_hash: Sha256 | None = None
    alloy_hash: Sha256 | None = None
    datasets: list[DatasetAttestation] = []
    nonce: str | None = None
    audience: str | None = None
    signature: AttestationSignature | None = None
    attested_at: str | None = None


class ForgeArtifact(Open):
    """The output of one forge run of one recipe version."""

    id: str = Field(min_length=1)
    recipe_id: str = Field(min_length=1)
    recipe_version: SemVer
    recipe_name: str | None = None

    # The frozen snapshot of the recipe's authored fields (RECIPE_SNAPSHOT_FIELDS).
    description: str | None = None
    user_summary: str | None = None
    author: str | None = None
    tags: list[str] = []
    license: str | None = None
    methodology_paper_url: str | None = None
    limitations: list[str] = []
    prior_metric_baselines: list[PriorBaseline] = []
    source: AlloySource | None = None
    calibration_corpus: CorpusRef | None = None
    quant_tiers: list[QuantTier] = []
    evaluation_benchmarks: list[BenchmarkDef] = []
    hardware: AlloyHardware | None = None
    stages: list[Stage] = []
    cycles: int | None = Field(default=None, ge=1)
    acceptance_criteria: AcceptanceCriteria | None = None
    parent_recipe_id: str | None = None
    license_strategy: Literal["inherit_from_source", "override"] | None = None
    license_reason: str | None = None

    forged_at: str | None = None
    hardware_node: str | None = None
    duration_minutes: float | None = Field(default=None, ge=0)
    forged_params_b: float | None = Field(default=None, ge=0)
    active_params_b: float | None = Field(default=None, ge=0)
    hardware_verified: list[HardwareVerified] = []
    results: Results | None = None
    alloy_hash: Sha256 | None = None
    receipt: Receipt | None = None
    integrity: Integrity | None = None
