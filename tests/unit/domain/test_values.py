"""The value types against the spec (ALLOY-FORMAT.md sections 2 to 4), the alloy fixtures and
the real alloys of the external conformance corpus (tests/alloy_corpus.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from foundry.domain.values import (
    RECIPE_FIELDS,
    RECIPE_SNAPSHOT_FIELDS,
    STAGE_TYPES,
    BenchmarkResult,
    CorpusRef,
    ForgeArtifact,
    ForgeRecipe,
    HardwareVerified,
    Integrity,
    LoraStage,
    PriorBaseline,
    PruneStage,
    QuantTier,
    Results,
    Sample,
    SearchStrategy,
    Stage,
    TrainStage,
)
from tests.alloy_corpus import (
    DELIVER_FIXTURE,
    EXECUTED_FIXTURE,
    NULLS_FIXTURE,
    alloy_or_skip,
    alloy_params,
    require_corpus,
)

RUN_ONLY_FIELDS = ("results", "receipt", "integrity", "alloyHash", "hardwareVerified")
LEGACY_STAGE_TYPES = ("deliver",)
# The fixtures always; the conformance corpus's files where it is found (see alloy_params).
ALLOY_FILES = [p.values[0] for p in alloy_params() if p.values[0] is not None]
STAGE = TypeAdapter(Stage)
HASH = "sha256:" + "0123456789abcdef" * 4


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def authored_part(alloy: dict[str, Any]) -> dict[str, Any]:
    """The alloy without what only a run knows and without legacy stage types."""
    authored = {key: value for key, value in alloy.items() if key not in RUN_ONLY_FIELDS}
    authored["stages"] = [s for s in alloy["stages"] if s["type"] not in LEGACY_STAGE_TYPES]
    return authored


def validate_authored_part(alloy: dict[str, Any]) -> ForgeRecipe:
    """Validate the authored part; every top-level field ForgeRecipe does not know is kept."""
    authored = authored_part(alloy)
    recipe = ForgeRecipe.model_validate(authored)
    unknown = {key: value for key, value in authored.items()
               if key not in RECIPE_FIELDS and value is not None}  # a null is absent
    assert recipe.model_extra == unknown
    return recipe


def stage_cases() -> list[Any]:
    return [
        pytest.param(stage, id=f"{case.id}-{index}-{stage['type']}")
        for case in alloy_params() if case.values[0] is not None
        for index, stage in enumerate(load(case.values[0])["stages"])
        if stage["type"] not in LEGACY_STAGE_TYPES
    ]


def minimal_recipe(**overrides: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "name": "tiny-forge",
        "version": "1.0.0",
        "source": {"baseModel": "Qwen/Qwen3.5-4B", "architecture": "qwen3_5"},
    }
    recipe.update(overrides)
    return recipe


def contained_in(original: Any, wire: Any) -> bool:
    """Whether every key and value of ``original`` is in ``wire`` (which may add defaults)."""
    if isinstance(original, dict):
        return isinstance(wire, dict) and all(
            key in wire and contained_in(value, wire[key]) for key, value in original.items()
        )
    if isinstance(original, list):
        return (
            isinstance(wire, list)
            and len(original) == len(wire)
            and all(contained_in(a, b) for a, b in zip(original, wire, strict=True))
        )
    return bool(original == wire)


def without_nulls(value: Any) -> Any:
    """The value with every object member that is null left out: what it means."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def test_a_null_optional_field_validates_as_if_it_were_absent() -> None:
    with_nulls = authored_part(load(NULLS_FIXTURE))
    assert with_nulls["hardware"] is None and with_nulls["stages"][0]["dataset"] is None
    recipe = ForgeRecipe.model_validate(with_nulls)
    assert recipe == ForgeRecipe.model_validate(without_nulls(with_nulls))
    assert recipe.hardware.supports_cpu is False and recipe.source.revision is None
    assert "unknownButNull" not in recipe.to_wire() and "hardware" in recipe.to_wire()
    # A null required field is still missing, and says so.
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate({**with_nulls, "source": {"baseModel": None,
                                                            "architecture": "qwen3_5"}})
    assert error_locs(error) == [("source", "baseModel")]


def error_locs(error: pytest.ExceptionInfo[ValidationError]) -> list[tuple[int | str, ...]]:
    return [tuple(e["loc"]) for e in error.value.errors()]


def test_the_conformance_corpus_is_where_the_tests_expect_it() -> None:
    assert len(require_corpus()) >= 6


@pytest.mark.parametrize("stage", stage_cases())
def test_every_stage_of_every_alloy_validates_and_round_trips(
    stage: dict[str, Any],
) -> None:
    model = STAGE.validate_python(stage)
    assert model.type == stage["type"]
    assert contained_in(without_nulls(stage), model.to_wire())
    assert STAGE.validate_python(model.to_wire()) == model


@pytest.mark.parametrize("path", alloy_params())
def test_the_authored_part_of_every_alloy_validates_and_keeps_its_extras(
    path: Path | None,
) -> None:
    path = alloy_or_skip(path)
    recipe = validate_authored_part(load(path))
    assert recipe.name == load(path)["name"]


@pytest.mark.parametrize("path", alloy_params())
def test_a_round_trip_through_the_wire_form_keeps_every_key(path: Path | None) -> None:
    authored = without_nulls(authored_part(load(alloy_or_skip(path))))
    wire = ForgeRecipe.model_validate(authored).to_wire()
    assert set(authored) <= set(wire)
    assert contained_in(authored, wire)
    assert ForgeRecipe.model_validate(wire) == ForgeRecipe.model_validate(authored)


def test_unknown_top_level_fields_of_an_executed_alloy_are_kept_on_the_wire() -> None:
    recipe = validate_authored_part(load(EXECUTED_FIXTURE))
    assert recipe.to_wire()["forgedModelIds"] == load(EXECUTED_FIXTURE)["forgedModelIds"]


def test_a_legacy_deliver_stage_is_refused_rather_than_silently_dropped() -> None:
    legacy = load(DELIVER_FIXTURE)
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(legacy)
    [problem] = error.value.errors()
    assert problem["type"] == "union_tag_invalid"
    assert problem["loc"] == ("stages", 3)


def test_the_recipe_fields_are_the_authored_fields_of_the_spec() -> None:
    assert {
        "id",
        "name",
        "version",
        "description",
        "userSummary",
        "author",
        "tags",
        "license",
        "methodologyPaperUrl",
        "limitations",
        "priorMetricBaselines",
        "source",
        "target",
        "stages",
        "cycles",
        "calibrationCorpus",
        "quantTiers",
        "evaluationBenchmarks",
        "hardware",
        "search",
        "outputs",
        "acceptanceCriteria",
        "parentRecipeId",
        "licenseStrategy",
        "licenseReason",
    } == RECIPE_FIELDS


def test_snake_case_input_is_accepted_and_written_back_in_camel_case() -> None:
    recipe = ForgeRecipe.model_validate(
        {
            "name": "tiny-forge",
            "version": "1.0.0",
            "user_summary": "A tiny forge.",
            "source": {"base_model": "Qwen/Qwen3.5-4B", "architecture": "qwen3_5", "is_moe": True},
            "hardware": {"supports_cpu": True},
            "stages": [
                {"type": "prune", "strategy": "entropy", "level": 0.2, "min_heads_per_layer": 6}
            ],
        }
    )
    assert recipe.user_summary == "A tiny forge."
    assert recipe.source.is_moe
    assert recipe.hardware.supports_cpu
    wire = recipe.to_wire()
    assert wire["userSummary"] == "A tiny forge."
    assert wire["source"]["isMoE"] is True
    assert wire["hardware"]["supportsCPU"] is True
    assert wire["stages"][0]["minHeadsPerLayer"] == 6


def test_stage_defaults_follow_the_catalogue() -> None:
    prune = PruneStage(strategy="magnitude", level=0.5)
    assert (prune.min_heads_per_layer, prune.min_kv_heads_per_layer, prune.analysis_steps) == (
        4,
        2,
        200,
    )
    train = TrainStage()
    assert (train.batch_size, train.gradient_accumulation, train.sequence_length) == (4, 1, 2048)
    assert (train.warmup_ratio, train.weight_decay, train.max_gradient_norm) == (0.03, 0.01, 1.0)
    lora = LoraStage()
    assert (lora.rank, lora.dropout, lora.epochs, lora.learning_rate) == (32, 0.05, 3, "1e-4")
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert prune.to_wire()["type"] == "prune"
    assert next(iter(prune.to_wire())) == "type"


@pytest.mark.parametrize(
    ("stage", "field"),
    [
        ({"type": "prune", "strategy": "entropy", "level": 1.5}, "level"),
        ({"type": "prune", "strategy": "entropy", "level": -0.1}, "level"),
        ({"type": "train", "batchSize": 65}, "batchSize"),
        ({"type": "train", "gradientAccumulation": 17}, "gradientAccumulation"),
        ({"type": "train", "sequenceLength": 64}, "sequenceLength"),
        ({"type": "train", "steps": 0}, "steps"),
        ({"type": "lora", "rank": 0}, "rank"),
        ({"type": "lora", "alpha": 513}, "alpha"),
        ({"type": "lora", "quantizeBits": 2}, "quantizeBits"),
        ({"type": "compact", "deadThreshold": 1.1}, "deadThreshold"),
        ({"type": "context-extend", "targetLength": 512, "method": "yarn"}, "targetLength"),
        ({"type": "context-extend", "targetLength": 4096, "method": "rope"}, "method"),
        (
            {"type": "expert-activation-profile", "calibrationCorpus": "c", "maxLength": 64},
            "maxLength",
        ),
        ({"type": "quant", "format": "gptq", "quantTypes": []}, "format"),
    ],
)
def test_a_value_out_of_range_names_the_field_path(stage: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(minimal_recipe(stages=[stage]))
    assert ("stages", 0, stage["type"], field) in error_locs(error)


@pytest.mark.parametrize("rate", ["fast", "", "0", "-1e-4", "inf", "nan"])
def test_a_learning_rate_must_parse_as_a_positive_number(rate: str) -> None:
    with pytest.raises(ValidationError) as error:
        STAGE.validate_python({"type": "train", "learningRate": rate})
    assert error_locs(error) == [("train", "learningRate")]


def test_a_learning_rate_written_as_a_number_is_refused() -> None:
    with pytest.raises(ValidationError):
        STAGE.validate_python({"type": "lora", "learningRate": 0.0001})


def test_an_unknown_stage_type_is_refused_with_the_allowed_tags_in_the_message() -> None:
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(minimal_recipe(stages=[{"type": "distill"}]))
    [problem] = error.value.errors()
    assert problem["type"] == "union_tag_invalid"
    assert problem["loc"] == ("stages", 0)
    for tag in STAGE_TYPES:
        assert f"'{tag}'" in problem["msg"]


def test_the_catalogue_has_every_stage_type_of_the_spec() -> None:
    assert len(STAGE_TYPES) == len(set(STAGE_TYPES)) == 23
    assert "deliver" not in STAGE_TYPES


@pytest.mark.parametrize(
    "stage_type",
    [
        "many-worlds-substrate",
        "many-worlds-adapter",
        "many-worlds-ensemble",
        "team-search",
        "gate-profile",
        "population-prune",
        "cv-ingest",
        "cv-eval",
    ],
)
def test_a_research_stage_is_accepted_and_keeps_its_fields(stage_type: str) -> None:
    stage = {"type": stage_type, "notes": "research", "substrateDim": 256, "sourceModels": ["a"]}
    assert STAGE.validate_python(stage).to_wire() == stage


def test_cycles_below_one_are_refused() -> None:
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(minimal_recipe(cycles=0))
    assert error_locs(error) == [("cycles",)]


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0.0", ""])
def test_a_version_that_is_not_semver_is_refused(version: str) -> None:
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(minimal_recipe(version=version))
    assert error_locs(error) == [("version",)]


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        ForgeRecipe.model_validate(minimal_recipe(name=""))


@pytest.mark.parametrize(
    "content_hash",
    [
        "0123456789abcdef" * 4,
        "sha256:" + "0" * 63,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha1:" + "0" * 40,
    ],
)
def test_a_corpus_hash_that_is_not_sha256_and_64_hex_is_refused(content_hash: str) -> None:
    corpus = {"name": "heldout", "contentHash": content_hash, "sizeBytes": 10}
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(minimal_recipe(calibrationCorpus=corpus))
    assert error_locs(error) == [("calibrationCorpus", "contentHash")]


def test_a_corpus_ref_refuses_unknown_fields_and_negative_sizes() -> None:
    assert CorpusRef(name="heldout", content_hash=HASH, size_bytes=0).to_wire() == {
        "name": "heldout",
        "contentHash": HASH,
        "sizeBytes": 0,
    }
    with pytest.raises(ValidationError):
        CorpusRef.model_validate({"name": "c", "contentHash": HASH, "sizeBytes": 1, "path": "x"})
    with pytest.raises(ValidationError):
        CorpusRef.model_validate({"name": "c", "contentHash": HASH, "sizeBytes": -1})


def test_a_quant_tier_takes_one_of_the_four_formats() -> None:
    tier = QuantTier.model_validate({"format": "gguf", "variants": ["Q4_K_M", "Q8_0"]})
    assert tier.target_devices == []
    with pytest.raises(ValidationError):
        QuantTier.model_validate({"format": "gptq", "variants": []})


def test_a_prior_baseline_accepts_the_strict_and_the_legacy_shape() -> None:
    strict = {
        "metric": "humaneval_pass@1",
        "value": 0.61,
        "source": "Qwen model card",
        "measuredAt": "2026-04-01",
        "measurementMethod": "evalplus, greedy",
    }
    legacy = {
        "id": "router-gate-l2-norm-2026-04-08",
        "metric": {"name": "router_gate_l2_norm", "calibrationCorpus": None},
        "prune": {"k": 80},
        "outcome": "negative_baseline",
        "harness": "llama.cpp",
    }
    assert PriorBaseline.model_validate(strict).to_wire() == strict
    assert PriorBaseline.model_validate(legacy).to_wire() == legacy
    with pytest.raises(ValidationError):
        PriorBaseline.model_validate({"value": 0.5})
    with pytest.raises(ValidationError):
        PriorBaseline.model_validate({"id": "x", "outcome": "abandoned"})


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"quickEvalChunks": 51}, "quickEvalChunks"),
        ({"maxCandidates": 0}, "maxCandidates"),
        ({"confidenceThreshold": 0.9999}, "confidenceThreshold"),
        ({"loraStepsIfNeeded": 99}, "loraStepsIfNeeded"),
        ({"coverageThreshold": 0.995}, "coverageThreshold"),
        ({"method": "genetic"}, "method"),
    ],
)
def test_a_search_strategy_out_of_range_names_the_field(search: dict[str, Any], field: str) -> None:
    assert SearchStrategy().quick_eval_chunks == 10
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(minimal_recipe(search=search))
    assert error_locs(error) == [("search", field)]


def test_an_acceptance_floor_is_a_fraction() -> None:
    gate = {"benchmarks": {"humaneval": {"min": 0.6, "anchorDelta": -3}}}
    assert ForgeRecipe.model_validate(minimal_recipe(acceptanceCriteria=gate)).acceptance_criteria
    with pytest.raises(ValidationError) as error:
        ForgeRecipe.model_validate(
            minimal_recipe(acceptanceCriteria={"benchmarks": {"humaneval": {"min": 60}}})
        )
    assert error_locs(error) == [("acceptanceCriteria", "benchmarks", "humaneval", "min")]


def test_a_recipe_is_immutable() -> None:
    recipe = ForgeRecipe.model_validate(minimal_recipe())
    with pytest.raises(ValidationError):
        recipe.name = "other"  # type: ignore[misc]


def test_an_artifact_needs_its_id_and_its_recipe_identity() -> None:
    artifact = ForgeArtifact(id="a1", recipe_id="r1", recipe_version="1.2.0")
    assert artifact.to_wire() == {
        "id": "a1",
        "recipeId": "r1",
        "recipeVersion": "1.2.0",
        "tags": [],
        "limitations": [],
        "priorMetricBaselines": [],
        "quantTiers": [],
        "evaluationBenchmarks": [],
        "stages": [],
        "hardwareVerified": [],
    }
    with pytest.raises(ValidationError) as error:
        ForgeArtifact.model_validate({})
    assert set(error_locs(error)) == {("id",), ("recipeId",), ("recipeVersion",)}


def test_an_artifact_snapshots_every_authored_field_it_names() -> None:
    assert set(RECIPE_SNAPSHOT_FIELDS) <= RECIPE_FIELDS
    artifact_fields = {field.alias for field in ForgeArtifact.model_fields.values()}
    assert set(RECIPE_SNAPSHOT_FIELDS) <= artifact_fields
    recipe = ForgeRecipe.model_validate(authored_part(load(EXECUTED_FIXTURE))).to_wire()
    snapshot = {key: recipe[key] for key in RECIPE_SNAPSHOT_FIELDS if key in recipe}
    artifact = ForgeArtifact.model_validate(
        {"id": "a1", "recipeId": "r1", "recipeVersion": recipe["version"], **snapshot}
    )
    assert contained_in(snapshot, artifact.to_wire())


def test_the_results_of_the_executed_alloy_validate() -> None:
    results = load(EXECUTED_FIXTURE)["results"]
    model = Results.model_validate(results)
    assert [b.name for b in model.benchmarks] == ["humaneval", "mmlu", "gsm8k"]
    assert model.benchmarks[0].metrics["passing"] == 41
    assert model.to_wire().keys() == without_nulls(results).keys()
    assert contained_in(without_nulls(results), model.to_wire())
    for profile in results["hardwareVerified"]:
        assert HardwareVerified.model_validate(profile).to_wire() == profile


def test_a_placeholder_model_hash_in_an_attestation_is_refused() -> None:
    integrity = load(EXECUTED_FIXTURE)["results"]["integrity"]
    with pytest.raises(ValidationError) as error:
        Integrity.model_validate(integrity)
    assert error_locs(error) == [("modelHash",)]
    fixed = Integrity.model_validate({**integrity, "modelHash": HASH})
    assert fixed.trust_level == "self-attested"
    assert fixed.code is not None
    assert fixed.code.runner == "foundry-tests/forge"
    assert "certifications" in (fixed.model_extra or {})


def test_result_entries_require_what_the_spec_does_not_mark_optional() -> None:
    with pytest.raises(ValidationError):
        BenchmarkResult.model_validate({"score": 1.0})
    with pytest.raises(ValidationError):
        Sample.model_validate({"label": "x", "prompt": "p"})
    with pytest.raises(ValidationError):
        HardwareVerified.model_validate({"device": "RTX 5090"})
