"""The two model cards of an artifact, generated from its data only (ALLOY-FORMAT.md section 6).

``render_cards(artifact)`` returns README.md (the user's view) and MODEL_METHODOLOGY.md (the
researcher's view). Every line comes from a field of the artifact; a field that is absent leaves
its line or section out, never a placeholder. The output is deterministic: the same artifact
gives byte-identical cards (no clock, no randomness, mappings walked in sorted order, lists in
their recorded order), so ``card_hash`` of the README is reproducible.

Front-matter: built with ``huggingface_hub.ModelCardData`` and dumped with its ``to_yaml()``,
not ``ModelCard.from_template``: ``to_yaml`` is one ``yaml.dump(sort_keys=False)`` over a dict
whose key order is fixed by ``ModelCardData.__init__`` and whose lists are ours, while the
template path adds a Jinja2 render and a re-parse of the whole card, more moving parts for the
same bytes. Fields: license; tags (below); base_model (``source.baseModel``, only when it is a
Hub id ``owner/name``: a local path or ``fake://`` URI would be invalid metadata) with
base_model_relation beside it (``base_model_relation``: how the stages changed it); library_name
``transformers`` only when the published model files (the last stage's ``model`` files) hold a
``config.json`` and ``.safetensors`` weights; model-index with one ``EvalResult`` per benchmark
that has a numeric score (dataset = the benchmark name and subset, metric type = its ``metric``,
else its name; the task type is ``text-generation``, the only kind of model the stage catalogue
forges, and the model-index cannot be written without one).

Tags rule: (1) the recipe's tags, in their order: ``tags``, then the ``tags`` of its publish
stages; (2) derived tags, in this order: ``source.architecture``, ``gguf`` when any quant tier is
GGUF, each tier variant lowercased (``Q4_K_M`` -> ``q4_k_m``), then ``foundry``. Quant tiers
are ``quantTiers``; an artifact without them uses its quant stages' ``format`` and
``quantTypes``. Tags are stripped, de-duplicated case-insensitively (the first spelling wins),
and cut at ``MAX_TAGS`` = 12 by keeping the first twelve in that order: recipe tags are never
dropped for derived ones; the derived tags at the end are the first to go.

Headline (the line under the title), first that the data supports: (1) the benchmark with the
largest improvement over the base model, ``"<name>: <score> vs <baseScore> for the base
model"`` (the improvement is its delta, or score - baseScore, negated for lower-is-better
metrics such as perplexity; only a positive one counts, and only where the base score was
made under the score's own evaluation ledger); (2) a context-extend stage: ``"context
extended to N tokens (method)"``; (3) a prune stage: ``"<level*100>% pruned (strategy)"``;
(4) ``"<recipeName> forged from <source.baseModel>"``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from foundry.adapters.publishing.cards_ledger import how_made, license_lines
from foundry.adapters.publishing.cards_sections import (
    as_list,
    as_map,
    bench_label,
    benchmarks,
    delta,
    fmt,
    hardware_verified,
    improvement,
    is_num,
    many_cycles,
    methodology,
    present,
    section,
    stage_label,
    stage_notes,
    stage_rows,
    table,
    title,
)
from foundry.adapters.publishing.eval_ledger import base_comparable
from foundry.domain.values.artifact import ArtifactDocument

README = "README.md"
METHODOLOGY = "MODEL_METHODOLOGY.md"
MAX_TAGS = 12
EVAL_TASK_TYPE = "text-generation"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# The config fields "What changed" names for each stage type (all fields: MODEL_METHODOLOGY.md).
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "source-config": ("contextLength", "tokenizer"),
    "context-extend": ("targetLength", "method", "trainingDataset", "trainingSteps"),
    "modality": ("modality", "encoderModel", "projectionArch"),
    "prune": ("strategy", "level"),
    "train": ("domain", "dataset", "steps", "learningRate", "sequenceLength"),
    "lora": ("rank", "alpha", "dataset", "epochs", "learningRate", "mergeAfter"),
    "compact": ("targetSizeGb", "enableQuantization"),
    "expert-activation-profile": ("calibrationCorpus", "metric"),
    "expert-prune": ("keepExperts", "keepExpertsPerLayer", "strategy", "prunePct"),
    "compensation-lora": ("teacher", "lossType", "loraRank", "steps"),
    "quant": ("format", "quantTypes"),
    "eval": ("benchmarks",),
    "package": ("format", "runtime"),
    "publish": ("org",),
    "deploy": ("target",),
}


def render_cards(artifact: ArtifactDocument) -> dict[str, str]:
    """{"README.md": ..., "MODEL_METHODOLOGY.md": ...}, both from the artifact's data only."""
    return {README: render_readme(artifact), METHODOLOGY: methodology(artifact)}


def card_hash(readme_text: str) -> str:
    """`sha256:` + hex SHA-256 of the README's UTF-8 bytes (the receipt's cardHash)."""
    return "sha256:" + hashlib.sha256(readme_text.encode("utf-8")).hexdigest()


def write_cards(artifact: ArtifactDocument, out_dir: Path) -> dict[str, Path]:
    """Render and write both cards into `out_dir` (created if missing), as UTF-8 bytes,
    atomically and never through a symlink (safe_files); InvalidInputError("out") if not."""
    from foundry.adapters.publishing.safe_files import writable_dir, write_atomic

    out_dir = writable_dir(out_dir, "out", create=True)
    return {name: write_atomic(out_dir, name, text.encode("utf-8"), field="out")
            for name, text in render_cards(artifact).items()}


# --- tags and front-matter -----------------------------------------------------------------

def quant_tiers(artifact: ArtifactDocument) -> list[tuple[str, list[str]]]:
    """(format, variants) of each quant tier: quantTiers, else the quant stages."""
    tiers = [as_map(t) for t in as_list(artifact.get("quantTiers"))]
    if tiers:
        return [(str(t.get("format") or ""), as_list(t.get("variants"))) for t in tiers]
    return [(str(r["config"].get("format") or ""), as_list(r["config"].get("quantTypes")))
            for r in stage_rows(artifact) if r.get("type") == "quant"]


def card_tags(artifact: ArtifactDocument) -> list[str]:
    """The front-matter tags, by the rule in the module docstring."""
    publish = [as_map(s) for s in as_list(artifact.get("stages"))
               if as_map(s).get("type") == "publish"]
    authored = [*as_list(artifact.get("tags")),
                *(t for stage in publish for t in as_list(stage.get("tags")))]
    tiers = quant_tiers(artifact)
    derived = [as_map(artifact.get("source")).get("architecture"),
               "gguf" if any(f.lower() == "gguf" for f, _ in tiers) else None,
               *(str(v).lower() for _, variants in tiers for v in variants), "foundry"]
    tags: list[str] = []
    seen: set[str] = set()
    for tag in (*authored, *derived):
        if not isinstance(tag, str) or not tag.strip() or tag.strip().casefold() in seen:
            continue
        seen.add(tag.strip().casefold())
        tags.append(tag.strip())
    return tags[:MAX_TAGS]


def library_name(artifact: ArtifactDocument) -> str | None:
    rows = stage_rows(artifact)
    files = [as_map(f) for f in as_list(rows[-1].get("files"))] if rows else []
    paths = [str(f.get("path", "")) for f in files if f.get("role") == "model"]
    if "config.json" in paths and any(p.endswith(".safetensors") for p in paths):
        return "transformers"
    return None


# Stage types that leave the weights as they were (reports, checks, packaging): they say
# nothing about how the published model relates to its base.
_NEUTRAL_STAGES = frozenset({"eval", "verify", "publish", "deliver", "source-config",
                             "expert-activation-profile"})


def base_model_relation(artifact: ArtifactDocument) -> str | None:
    """How the published model relates to `base_model`, in the Hub's words (its model tree):
    `merge` when a merge stage ran; `adapter` when the only change is a LoRA kept separate
    (mergeAfter false); `quantized` when the only change is quantization; else `finetune`
    (pruning, training, a merged LoRA: new weights derived from the base). None without
    stages that change anything."""
    changing = [r for r in stage_rows(artifact)
                if str(r.get("type")) not in _NEUTRAL_STAGES]
    kinds = {str(r.get("type")) for r in changing}
    if not kinds:
        return None
    if "merge" in kinds:
        return "merge"
    if kinds == {"quant"}:
        return "quantized"
    if kinds <= {"lora", "quant"} and not any(
            as_map(r.get("config")).get("mergeAfter", True) for r in changing
            if r.get("type") == "lora"):
        return "adapter"
    return "finetune"


def card_data(artifact: ArtifactDocument) -> ModelCardData:
    base = as_map(artifact.get("source")).get("baseModel")
    hub_base = base if isinstance(base, str) and HUB_ID.match(base) else None
    relation = base_model_relation(artifact) if hub_base else None
    evals = [
        EvalResult(task_type=EVAL_TASK_TYPE, dataset_type=str(b["name"]),
                   dataset_name=str(b["name"]),
                   dataset_config=str(b["subset"]) if present(b.get("subset")) else None,
                   metric_type=str(b.get("metric") or b["name"]), metric_value=b["score"])
        for b in benchmarks(artifact) if present(b.get("name")) and is_num(b.get("score"))
    ]
    license_ = artifact.get("license")
    # Not a named ModelCardData field in huggingface_hub 2.x: passed through as metadata.
    extra: dict[str, Any] = {"base_model_relation": relation} if relation else {}
    return ModelCardData(
        license=str(license_) if present(license_) else None,
        tags=card_tags(artifact) or None,
        base_model=hub_base,
        library_name=library_name(artifact),
        model_name=title(artifact) if evals else None,
        eval_results=evals or None,
        **extra,
    )


# --- README.md -----------------------------------------------------------------------------

def headline(artifact: ArtifactDocument) -> str | None:
    """The evidence-priority headline (module docstring); None when nothing supports one."""
    measured = [b for b in benchmarks(artifact)
                if is_num(b.get("score")) and is_num(b.get("baseScore"))
                and base_comparable(b) and (improvement(b) or 0.0) > 0]
    if measured:
        best = max(measured, key=lambda b: improvement(b) or 0.0)  # the first of equals
        return (f"{fmt(best.get('name'))}: {fmt(best['score'])} vs {fmt(best['baseScore'])} "
                "for the base model")
    rows = stage_rows(artifact)
    for row in rows:
        c = row["config"]
        if row.get("type") == "context-extend" and is_num(c.get("targetLength")):
            method = f" ({c['method']})" if present(c.get("method")) else ""
            return f"context extended to {fmt(c['targetLength'])} tokens{method}"
    for row in rows:
        c = row["config"]
        if row.get("type") == "prune" and is_num(c.get("level")):
            strategy = f" ({c['strategy']})" if present(c.get("strategy")) else ""
            return f"{float(c['level']) * 100:g}% pruned{strategy}"
    name, base = artifact.get("recipeName"), as_map(artifact.get("source")).get("baseModel")
    if present(name) and present(base):
        return f"{name} forged from {base}"
    return f"Forged from {base}" if present(base) else None


def render_readme(artifact: ArtifactDocument) -> str:
    name, line = title(artifact), headline(artifact)
    summary = artifact.get("userSummary")
    sections = [
        ["---", card_data(artifact).to_yaml(), "---"],
        [f"# {name}"] if name else [],
        [f"**{line}**"] if line else [],
        [str(summary)] if present(summary) else [],
        _benchmark_table(artifact), how_made(artifact), _what_changed(artifact),
        _runs_on(artifact), license_lines(artifact), _limitations(artifact), _custody(artifact),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _benchmark_table(artifact: ArtifactDocument) -> list[str]:
    # A base score made under another ledger is shown, never subtracted (eval_ledger.py).
    rows = [[bench_label(b), b.get("metric"), b.get("score"), b.get("baseScore"),
             delta(b) if base_comparable(b) else "not comparable"]
            for b in benchmarks(artifact)]
    if not rows:
        return []
    return section("## Benchmarks",
                   table(["Benchmark", "Metric", "Score", "Base model", "Delta"], rows))


def _what_changed(artifact: ArtifactDocument) -> list[str]:
    rows = stage_rows(artifact)
    cycles, lines = many_cycles(rows), []
    for row in rows:
        c = row["config"]
        keys = KEY_FIELDS.get(str(row.get("type")), ())
        facts = "; ".join(f"{k} {fmt(c[k])}" for k in keys if present(c.get(k)))
        notes = " ".join(" ".join(stage_notes(row)).split())
        lines.append(f"- {stage_label(row, cycles)}" + (f": {facts}" if facts else "")
                     + (f". {notes}" if notes else ""))
    return section("## What changed", lines)


def _runs_on(artifact: ArtifactDocument) -> list[str]:
    rows = [[h.get("device"), h.get("format"), h.get("sizeGb"), h.get("tokensPerSec"),
             h.get("verified")] for h in hardware_verified(artifact)]
    if not rows:
        return []
    return section("## Runs on",
                   table(["Device", "Format", "Size (GB)", "Tokens/s", "Verified"], rows))


def _limitations(artifact: ArtifactDocument) -> list[str]:
    items = [str(x).strip() for x in as_list(artifact.get("limitations")) if present(x)]
    return section("## Limitations", [f"- {x}" for x in items])


def _custody(artifact: ArtifactDocument) -> list[str]:
    prov = as_map(artifact.get("provenance"))
    recipe = " version ".join(f"`{fmt(artifact[k])}`" for k in ("recipeId", "recipeVersion")
                              if present(artifact.get(k)))
    revision = prov.get("recipeRevision")
    source_hash = as_map(prov.get("source")).get("sourceHash")
    base = as_map(artifact.get("source")).get("baseModel")
    lines = [
        *([f"- Artifact: `{artifact['id']}`"] if present(artifact.get("id")) else []),
        *([f"- Recipe: {recipe}" + (f", revision {fmt(revision)}" if present(revision) else "")]
          if recipe else []),
        *([f"- Run: `{prov['runId']}`"] if present(prov.get("runId")) else []),
        *([f"- Imported from: `{prov['sourceFile']}`"
           + (f", file hash `{prov['fileSha256']}`" if present(prov.get("fileSha256")) else "")]
          if prov.get("imported") and present(prov.get("sourceFile")) else []),
        *([f"- alloyHash: `{artifact['alloyHash']}`"] if present(artifact.get("alloyHash"))
          else []),
        *([f"- Source: `{base}`" + (f", hash `{source_hash}`" if present(source_hash) else "")]
          if present(base) else [f"- Source hash: `{source_hash}`"] if present(source_hash)
          else []),
    ]
    rows = stage_rows(artifact)
    cycles = many_cycles(rows)
    hashed = [f"  - {stage_label(r, cycles)}: `{fmt(r.get('inputHash'))}` → "
              f"`{fmt(r.get('outputHash'))}`" for r in rows
              if present(r.get("inputHash")) or present(r.get("outputHash"))]
    if hashed:
        lines += ["- Stages, input → output:", *hashed]
    return section("## Chain of custody", lines)
