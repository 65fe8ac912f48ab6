"""The model cards: generated from the artifact's data only, deterministically (ALLOY-FORMAT.md
section 6), with the evidence-priority headline, capped tags and a row for every benchmark."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard

from foundry.adapters.publishing.cards import (
    MAX_TAGS,
    card_hash,
    card_tags,
    headline,
    render_cards,
    write_cards,
)
from tests.alloy_corpus import EXECUTED_FIXTURE

EXECUTED = EXECUTED_FIXTURE
H = {n: "sha256:" + f"{n:x}" * 64 for n in range(1, 8)}

MINIMAL: dict[str, Any] = {
    "id": "art-1", "recipeId": "rec-1", "recipeVersion": "1.2.3",
    "recipeName": "tiny-forged", "source": {"baseModel": "acme/tiny-base"},
}


def stage(index: int, type_: str, config: dict[str, Any], inp: str, out: str,
          notes: list[str] | None = None, cycle: int = 1) -> dict[str, Any]:
    return {"cycle": cycle, "index": index, "type": type_, "config": {"type": type_, **config},
            "inputHash": inp, "outputHash": out, "files": [], "metrics": {"sparsity": 0.3},
            "notes": notes or [], "seconds": 1.5}


def full_artifact() -> dict[str, Any]:
    """An artifact as foundry.domain.artifact_builder writes it, with every card field filled."""
    return {
        **copy.deepcopy(MINIMAL),
        "description": "Prunes and trains a tiny model.",
        "userSummary": "A tiny model, pruned by a third.",
        "tags": ["code", "tiny"],
        "license": "apache-2.0",
        "limitations": ["Trained on a few MB of text."],
        "priorMetricBaselines": [{"metric": "perplexity", "value": 40.0, "source": "run 7",
                                  "measuredAt": "2026-01-01", "measurementMethod": "wikitext"}],
        "source": {"baseModel": "acme/tiny-base", "architecture": "llama"},
        "calibrationCorpus": {"name": "stdlib", "contentHash": H[7], "sizeBytes": 1234},
        "quantTiers": [{"format": "gguf", "variants": ["Q8_0", "Q4_K_M"]}],
        "stages": [{"type": "prune", "strategy": "magnitude", "level": 0.3,
                    "notes": "Global L1 pruning."}],
        "cycles": 1,
        "hardwareNode": "cpu@local",
        "forgedAt": "2026-02-02T00:00:00+00:00",
        "hardwareVerified": [{"device": "cpu", "format": "gguf-Q8_0", "sizeGb": 0.5,
                              "tokensPerSec": 100.0, "verified": True}],
        "results": {"benchmarks": [{"name": "perplexity", "metric": "perplexity",
                                    "score": 22.5, "baseScore": 28.0, "delta": -5.5}]},
        "alloyHash": H[6],
        "provenance": {
            "runId": "run-1", "recipeRevision": 2, "recipeHash": H[5],
            "source": {"baseModel": "acme/tiny-base", "sourceHash": H[1]},
            "gate": {"passed": True, "reasons": ["perplexity 22.5 < baseline 40.0"]},
            "attempts": [{"attempt": 1, "workerHost": "vm", "device": "cpu",
                          "startedAt": "2026-02-02T00:00:00+00:00",
                          "software": {"torch": "2.13.0", "foundry": "0.1.0"}}],
            "stages": [
                stage(0, "prune", {"strategy": "magnitude", "level": 0.3,
                                   "notes": "Global L1 pruning."}, H[1], H[2],
                      notes=["12 tensors masked"]),
                stage(1, "quant", {"format": "gguf", "quantTypes": ["Q8_0"]}, H[2], H[3]),
            ],
        },
    }


def changed(artifact: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(artifact), **changes}


def reversed_keys(value: Any) -> Any:
    """The same data with every mapping's keys in the opposite order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


def front_matter(readme: str) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", readme, re.DOTALL)
    assert match, readme
    return dict(yaml.safe_load(match.group(1)))


def body(readme: str) -> str:
    return readme.split("\n---\n", 1)[1]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    block = markdown.split(heading + "\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def benchmark(name: str, score: float | None, base: float | None,
              metric: str = "accuracy") -> dict[str, Any]:
    b: dict[str, Any] = {"name": name, "metric": metric}
    return {**b, **({"score": score} if score is not None else {}),
            **({"baseScore": base} if base is not None else {})}


def prune_row(level: float = 0.25, strategy: str = "entropy") -> dict[str, Any]:
    return stage(0, "prune", {"strategy": strategy, "level": level}, H[1], H[2])


def extend_row() -> dict[str, Any]:
    return stage(1, "context-extend", {"targetLength": 131072, "method": "yarn"}, H[2], H[3])


def forged(rows: list[dict[str, Any]], benchmarks: list[dict[str, Any]]) -> dict[str, Any]:
    return changed(MINIMAL, provenance={"stages": rows}, results={"benchmarks": benchmarks})


# --- determinism ---------------------------------------------------------------------------

def test_rendering_the_same_artifact_twice_gives_byte_identical_cards():
    assert render_cards(full_artifact()) == render_cards(full_artifact())


def test_an_artifact_with_its_keys_in_another_order_renders_byte_identical_cards():
    artifact = full_artifact()
    shuffled = reversed_keys(artifact)
    assert list(shuffled) != list(artifact)
    assert list(shuffled["provenance"]["attempts"][0]["software"]) == ["foundry", "torch"]
    first, second = render_cards(artifact), render_cards(shuffled)
    for name in ("README.md", "MODEL_METHODOLOGY.md"):
        assert first[name].encode("utf-8") == second[name].encode("utf-8")


def test_rendering_does_not_change_the_artifact():
    artifact = full_artifact()
    render_cards(artifact)
    assert artifact == full_artifact()


# --- no invented text ----------------------------------------------------------------------

def test_an_artifact_with_only_its_identity_has_no_section_for_missing_data():
    cards = render_cards(MINIMAL)
    readme = cards["README.md"]
    assert [line for line in readme.splitlines() if line.startswith("#")] == [
        "# tiny-forged", "## Chain of custody"]
    for absent in ("benchmark", "runs on", "limitation", "what changed", "model-index",
                   "license", "tbd", "todo", "n/a", "unknown", "—"):
        assert absent not in readme.lower(), absent
    methodology = cards["MODEL_METHODOLOGY.md"]
    assert [line for line in methodology.splitlines() if line.startswith("#")] == [
        "# tiny-forged: methodology", "## Run"]
    for absent in ("stage", "gate", "baseline", "corpus", "hash", "attempt", "tbd"):
        assert absent not in methodology.lower(), absent


def test_every_line_of_a_minimal_readme_is_traceable_to_a_field():
    readme = render_cards(MINIMAL)["README.md"]
    assert front_matter(readme) == {"base_model": "acme/tiny-base", "tags": ["foundry"]}
    values = ["art-1", "rec-1", "1.2.3", "tiny-forged", "acme/tiny-base"]
    structure = {"## Chain of custody"}
    for line in filter(None, body(readme).splitlines()):
        assert line in structure or any(v in line for v in values), line


def test_a_stage_without_notes_gets_no_blockquote_and_no_invented_note():
    artifact = forged([prune_row()], [])
    cards = render_cards(artifact)
    assert ">" not in cards["MODEL_METHODOLOGY.md"].replace("→", "")
    assert "- prune: strategy entropy; level 0.25\n" in cards["README.md"]


# --- the headline --------------------------------------------------------------------------

def test_a_benchmark_gain_over_the_base_model_beats_context_extension_and_pruning():
    artifact = forged([prune_row(), extend_row()], [benchmark("mmlu", 68.5, 62.1)])
    assert headline(artifact) == "mmlu: 68.5 vs 62.1 for the base model"
    assert "**mmlu: 68.5 vs 62.1 for the base model**" in render_cards(artifact)["README.md"]


def test_the_benchmark_with_the_largest_gain_is_the_headline():
    marks = [benchmark("gsm8k", 71.2, 65.8), benchmark("mmlu", 68.5, 62.1),
             benchmark("arc", 50.0, 49.0)]
    assert headline(forged([], marks)) == "mmlu: 68.5 vs 62.1 for the base model"


def test_a_lower_perplexity_counts_as_a_gain_and_a_higher_one_does_not():
    better = benchmark("perplexity", 22.5, 28.0, metric="perplexity")
    worse = benchmark("perplexity", 30.0, 28.0, metric="perplexity")
    assert headline(forged([], [better])) == "perplexity: 22.5 vs 28 for the base model"
    assert headline(forged([prune_row()], [worse])) == "25% pruned (entropy)"


def test_context_extension_beats_pruning_when_no_benchmark_beats_the_base_model():
    marks = [benchmark("mmlu", 60.0, 62.1), benchmark("humaneval", 74.1, None)]
    assert headline(forged([prune_row(), extend_row()], marks)) == (
        "context extended to 131072 tokens (yarn)")


def test_pruning_is_the_headline_without_a_benchmark_gain_or_context_extension():
    assert headline(forged([prune_row(0.3, "magnitude")], [])) == "30% pruned (magnitude)"


def test_the_default_headline_is_built_only_from_the_recipe_name_and_base_model():
    assert headline(MINIMAL) == "tiny-forged forged from acme/tiny-base"
    assert headline({"id": "a", "recipeId": "r", "recipeVersion": "1.0.0"}) is None


# --- tags ----------------------------------------------------------------------------------

def test_tags_are_deduplicated_case_insensitively_keeping_the_first_spelling():
    artifact = changed(MINIMAL, tags=["Code", "code", "GGUF", " Foundry "],
                       source={"baseModel": "acme/x", "architecture": "LLaMA"},
                       quantTiers=[{"format": "gguf", "variants": ["Q8_0", "q8_0"]}])
    assert card_tags(artifact) == ["Code", "GGUF", "Foundry", "LLaMA", "q8_0"]


def test_tags_keep_recipe_tags_then_architecture_gguf_variants_and_foundry():
    artifact = changed(MINIMAL, tags=["code"],
                       source={"baseModel": "acme/x", "architecture": "qwen3"},
                       stages=[{"type": "publish", "org": "o", "tags": ["forged", "code"]}],
                       quantTiers=[{"format": "gguf", "variants": ["Q4_K_M", "Q8_0"]}])
    assert card_tags(artifact) == ["code", "forged", "qwen3", "gguf", "q4_k_m", "q8_0",
                                   "foundry"]


def test_tags_are_capped_at_twelve_dropping_derived_tags_before_recipe_tags():
    recipe_tags = [f"t{i}" for i in range(10)]
    artifact = changed(MINIMAL, tags=recipe_tags,
                       source={"baseModel": "a/b", "architecture": "arch"},
                       quantTiers=[{"format": "gguf", "variants": ["Q4_K_M", "Q8_0"]}])
    tags = card_tags(artifact)
    assert MAX_TAGS == 12 and tags == [*recipe_tags, "arch", "gguf"]
    assert front_matter(render_cards(artifact)["README.md"])["tags"] == tags
    twenty = [f"t{i}" for i in range(20)]
    assert card_tags(changed(MINIMAL, tags=twenty)) == twenty[:MAX_TAGS]


def test_tags_without_quant_tiers_come_from_the_quant_stages():
    artifact = forged([stage(0, "quant", {"format": "gguf", "quantTypes": ["Q5_K_M"]},
                             H[1], H[2])], [])
    assert card_tags(artifact) == ["gguf", "q5_k_m", "foundry"]


# --- benchmarks ----------------------------------------------------------------------------

def test_every_benchmark_entry_renders_a_row_even_with_missing_fields():
    marks = [{"name": "humaneval", "metrics": {"score": 74.1}},
             {"name": "mmlu", "subset": "mmlu-pro", "score": 68.5},
             {"name": "gsm8k", "metric": "accuracy", "baseScore": 65.8},
             {"name": "arc", "metric": "acc", "score": 0.5, "baseScore": 0.25},
             {"name": "piqa", "score": 0.5, "delta": 0.1},
             {"score": 0.2}]
    readme = render_cards(forged([], marks))["README.md"]
    assert table_rows(readme, "## Benchmarks") == [
        ["humaneval", "—", "—", "—", "—"],
        ["mmlu (mmlu-pro)", "—", "68.5", "—", "—"],
        ["gsm8k", "accuracy", "—", "65.8", "—"],
        ["arc", "acc", "0.5", "0.25", "0.25"],
        ["piqa", "—", "0.5", "—", "0.1"],
        ["—", "—", "0.2", "—", "—"],
    ]
    index = front_matter(readme)["model-index"][0]["results"]
    assert [r["dataset"]["name"] for r in index] == ["mmlu", "arc", "piqa"]


def test_the_front_matter_is_valid_hub_metadata_with_license_base_model_and_results():
    readme = render_cards(full_artifact())["README.md"]
    meta = front_matter(readme)
    assert (meta["license"], meta["base_model"]) == ("apache-2.0", "acme/tiny-base")
    assert meta["tags"] == ["code", "tiny", "llama", "gguf", "q8_0", "q4_k_m", "foundry"]
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"] == [{"type": "perplexity", "value": 22.5}]
    card = ModelCard(readme)
    assert card.data.base_model == "acme/tiny-base" and card.data.eval_results


def test_a_base_model_that_is_not_a_hub_id_stays_out_of_the_front_matter():
    local = changed(MINIMAL, source={"baseModel": "./.foundry/models/tiny-llama"})
    assert "base_model" not in front_matter(render_cards(local)["README.md"])
    assert "./.foundry/models/tiny-llama" in render_cards(local)["README.md"]


# --- the sections --------------------------------------------------------------------------

def test_the_readme_has_what_changed_runs_on_limitations_and_chain_of_custody():
    readme = render_cards(full_artifact())["README.md"]
    assert ("- prune: strategy magnitude; level 0.3. Global L1 pruning. 12 tensors masked\n"
            "- quant: format gguf; quantTypes Q8_0\n") in readme
    assert table_rows(readme, "## Runs on") == [["cpu", "gguf-Q8_0", "0.5", "100", "yes"]]
    assert "## Limitations\n\n- Trained on a few MB of text.\n" in readme
    custody = readme.split("## Chain of custody\n\n", 1)[1]
    for fact in ("`rec-1` version `1.2.3`, revision 2", "Run: `run-1`", f"alloyHash: `{H[6]}`",
                 f"`acme/tiny-base`, hash `{H[1]}`", f"prune: `{H[1]}` → `{H[2]}`",
                 f"quant: `{H[2]}` → `{H[3]}`"):
        assert fact in custody, fact


def test_the_methodology_quotes_every_stage_note_and_lists_gate_baselines_hashes_attempts():
    text = render_cards(full_artifact())["MODEL_METHODOLOGY.md"]
    assert "### 1. prune\n" in text and "### 2. quant\n" in text
    assert "> Global L1 pruning.\n\n> 12 tensors masked\n" in text
    assert "- `level`: 0.3\n- `strategy`: magnitude\n" in text
    assert "## Gate\n\nPassed.\n\n- perplexity 22.5 < baseline 40.0\n" in text
    assert ("- metric: perplexity; value: 40; source: run 7; measuredAt: 2026-01-01; "
            "measurementMethod: wikitext") in text
    assert f"- Name: stdlib\n- Content hash: {H[7]}\n" in text
    for fact in (f"alloyHash: {H[6]}", f"Recipe hash: {H[5]}", f"Source hash: {H[1]}",
                 f"| prune | {H[1]} | {H[2]} |"):
        assert fact in text, fact
    assert "- software `foundry`: 0.1.0\n- software `torch`: 2.13.0\n" in text


def test_a_stage_that_ran_in_several_cycles_is_labelled_with_its_cycle():
    rows = [prune_row(), {**prune_row(), "cycle": 2}]
    readme = render_cards(forged(rows, []))["README.md"]
    assert "- prune (cycle 1): " in readme and "- prune (cycle 2): " in readme


def test_the_executed_alloy_fixture_renders_its_benchmarks_hardware_and_stages():
    alloy = json.loads(EXECUTED.read_text())
    cards = render_cards(alloy)
    readme = cards["README.md"]
    assert readme.startswith("---\n") and "\n# tiny-code-balanced\n" in readme
    assert "**30% pruned (entropy)**" in readme
    assert [r[0] for r in table_rows(readme, "## Benchmarks")] == [
        "humaneval", "mmlu (mmlu-pro)", "gsm8k"]
    assert [r[:2] for r in table_rows(readme, "## Runs on")] == [
        ["RTX 4090 24GB", "fp16"], ["MacBook Pro 16GB M2", "Q8_0"],
        ["MacBook Air 8GB", "Q4_K_M"], ["iPhone 16", "Q4_K_M"]]
    meta = front_matter(readme)
    assert meta["base_model"] == "Qwen/Qwen3.5-0.8B" and len(meta["tags"]) == MAX_TAGS
    assert meta["tags"][:7] == alloy["tags"]
    assert '"hardScore": 41.7' in cards["MODEL_METHODOLOGY.md"]
    assert cards == render_cards(reversed_keys(alloy))


# --- card hash and writing -----------------------------------------------------------------

def test_card_hash_is_the_sha256_of_the_readme_bytes_and_changes_with_one_character():
    readme = render_cards(full_artifact())["README.md"]
    digest = card_hash(readme)
    assert digest == "sha256:" + hashlib.sha256(readme.encode("utf-8")).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert card_hash(readme[:-2] + "X" + readme[-1]) != digest
    assert card_hash(readme.replace("22.5", "22.6", 1)) != digest


@pytest.mark.parametrize("name", ["README.md", "MODEL_METHODOLOGY.md"])
def test_write_cards_writes_each_card_as_its_rendered_utf8_bytes(tmp_path, name):
    paths = write_cards(full_artifact(), tmp_path / "cards")
    assert sorted(paths) == ["MODEL_METHODOLOGY.md", "README.md"]
    assert paths[name] == tmp_path / "cards" / name
    assert paths[name].read_bytes() == render_cards(full_artifact())[name].encode("utf-8")


def test_an_imported_artifact_names_its_source_file_and_uses_its_recipe_stages():
    artifact = changed(MINIMAL, stages=[{"type": "prune", "strategy": "entropy", "level": 0.3}],
                       provenance={"imported": True, "runId": "run-9",
                                   "sourceFile": "q.alloy.json", "fileSha256": H[4]})
    readme = render_cards(artifact)["README.md"]
    assert f"- Imported from: `q.alloy.json`, file hash `{H[4]}`\n" in readme
    assert "**30% pruned (entropy)**" in readme
    assert "- prune: strategy entropy; level 0.3\n" in readme


def test_library_name_is_transformers_only_when_the_model_files_are_a_transformers_checkpoint():
    def files(*names: str) -> dict[str, Any]:
        row = {**prune_row(), "files": [{"path": n, "role": "model", "sha256": H[1], "size": 1}
                                        for n in names]}
        return front_matter(render_cards(forged([row], []))["README.md"])

    assert files("config.json", "model.safetensors")["library_name"] == "transformers"
    assert "library_name" not in files("config.json", "model.bin")
    assert "library_name" not in files("model.safetensors")
