"""`compact`: band every unit by its calibration activity, remove the dead, quantize by band.

The exact semantics (the alloy format names only the thresholds) are in docs/compaction.md:

1. Profile: the activation profile the input model carries, else one taken here
   (`activation_profile`). Units: experts (REAP saliency), dense MLP channels (mean
   |act(gate) * up|), attention and linear-attention heads (mean output-slice L2 norm).
2. Normalise per layer and unit kind: score / max score of that kind in that layer (0..1).
3. Bands: dead < deadThreshold <= dormant < dormantThreshold <= low < lowThreshold <=
   medium < mediumThreshold <= high < highThreshold <= critical.
4. Removal: transformers configs hold one expert count and one MLP width for every layer, so
   each layer loses the same number of units of a kind: the number of dead units of the layer
   that has the fewest, its lowest-scoring units. No unit at or above deadThreshold is ever
   removed; experts never drop below num_experts_per_tok. Heads are banded and counted, never
   removed here (the prune stage removes heads respecting GQA groups).
5. Quantization (`enableQuantization`): each decoder layer gets a band from its mean raw
   expert/channel score over the largest layer's, and the band a GGUF type (`BAND_TYPES`);
   llama.cpp quantizes the model once per type needed and the mixed file takes each layer's
   tensors from the tier of its type (embeddings and output from the highest one used).
   With `targetSizeGb`, every layer moves one band down until the file fits or all sit at the
   lowest band; whether it fit is recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundry.domain.values.stages import CompactStage
from foundry.executors.architectures import Architecture, for_config
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.activation_profile import (
    PROFILE_FILE,
    calibration_windows,
    find_profile,
    profile_hash,
    profile_model,
)
from foundry.executors.real.common import (
    load_model,
    param_count,
    parse_stage,
    save_model,
    set_seed,
    stage_seed,
)
from foundry.executors.real.expert_prune import slice_experts

BANDS = ("dead", "dormant", "low", "medium", "high", "critical")
BAND_TYPES = {"dead": "Q2_K", "dormant": "Q3_K_M", "low": "Q4_K_M", "medium": "Q5_K_M",
              "high": "Q6_K", "critical": "Q8_0"}
PROFILE_SEQ_LEN = 256


def thresholds(stage: CompactStage) -> list[float]:
    names = ("deadThreshold", "dormantThreshold", "lowThreshold", "mediumThreshold",
             "highThreshold")
    values = [float(stage.dead_threshold), float(stage.dormant_threshold),
              float(stage.low_threshold), float(stage.medium_threshold),
              float(stage.high_threshold)]
    for (a, va), (b, vb) in zip(zip(names, values, strict=True),
                                zip(names[1:], values[1:], strict=True), strict=False):
        if vb < va:
            raise ExecutorError(f"{b} ({vb}) is below {a} ({va}): thresholds must not decrease")
    return values


def band_of(score: float, cuts: Sequence[float]) -> str:
    for band, cut in zip(BANDS, cuts, strict=False):
        if score < cut:
            return band
    return BANDS[-1]


def normalised(values: Sequence[float]) -> list[float]:
    top = max(values, default=0.0)
    return [v / top if top > 0 else 0.0 for v in values]


def unit_scores(profile: Mapping[str, Any]) -> dict[str, dict[int, list[float]]]:
    """kind (experts, channels, heads) -> layer -> raw score per unit."""
    out: dict[str, dict[int, list[float]]] = {"experts": {}, "channels": {}, "heads": {}}
    for entry in profile["layers"]:
        i = int(entry["layer"])
        if "experts" in entry:
            out["experts"][i] = [float(v) for v in entry["experts"]["reap"]]
        if "channels" in entry:
            out["channels"][i] = [float(v) for v in entry["channels"]["activationMagnitude"]]
        if "heads" in entry:
            out["heads"][i] = [float(v) for v in entry["heads"]["outputNorm"]]
    return out


def removal(scores: Mapping[int, list[float]], cut: float, floor: int) -> dict[int, list[int]]:
    """Per layer, the units kept: each layer drops the same number of its lowest units, the
    fewest dead units any layer has, never going below `floor` units."""
    if not scores:
        return {}
    norm = {i: normalised(v) for i, v in scores.items()}
    dead = min(sum(s < cut for s in v) for v in norm.values())
    width = min(len(v) for v in norm.values())
    drop = max(0, min(dead, width - floor))
    kept: dict[int, list[int]] = {}
    for i, v in norm.items():
        order = sorted(range(len(v)), key=lambda u: (v[u], u))
        kept[i] = sorted(order[drop:])
    return kept


def slice_channels(model: Any, arch: Architecture, keep: Mapping[int, Sequence[int]]) -> int:
    """Keep `keep[layer]` channels of each dense MLP; returns the new intermediate size."""
    import torch

    assert arch.mlp is not None
    mlp = arch.mlp
    sizes = {len(v) for v in keep.values()}
    if len(sizes) != 1:
        raise ExecutorError(f"every dense MLP must keep the same width: {sizes}")
    width = sizes.pop()
    for i, kept in keep.items():
        block = model.model.layers[i]
        for part in mlp.module.split("."):
            block = getattr(block, part)
        index = torch.tensor(list(kept), dtype=torch.long)
        for name, dim in ((mlp.gate_proj, 0), (mlp.up_proj, 0), (mlp.down_proj, 1)):
            linear = getattr(block, name)
            weight = linear.weight.data
            linear.weight = torch.nn.Parameter(
                weight.index_select(dim, index.to(weight.device)).clone())
            if dim == 0:
                linear.out_features = width
                if linear.bias is not None:
                    linear.bias = torch.nn.Parameter(
                        linear.bias.data[index.to(linear.bias.device)].clone())
            else:
                linear.in_features = width
        if hasattr(block, "intermediate_size"):
            block.intermediate_size = width
    setattr(model.config, mlp.intermediate_key, width)
    return width


def layer_bands(scores: Mapping[str, Mapping[int, list[float]]], cuts: Sequence[float],
                layers: int) -> dict[int, str]:
    """Each decoder layer's band, from its mean expert/channel score over the largest one."""
    raw = {}
    for i in range(layers):
        values = scores["experts"].get(i) or scores["channels"].get(i) or []
        raw[i] = sum(values) / len(values) if values else 0.0
    norm = normalised([raw[i] for i in range(layers)])
    return {i: band_of(norm[i], cuts) for i in range(layers)}


def _tensor_layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
        return int(parts[1])
    return None


def assemble(tiers: Mapping[str, Path], layer_types: Mapping[int, str], top: str,
             out: Path) -> dict[str, int]:
    """Write `out` with each `blk.N.*` tensor from the tier `layer_types[N]`, the rest from
    `top`, metadata from `top`. Returns the count of each tensor type written."""
    import gguf

    readers = {t: gguf.GGUFReader(p) for t, p in tiers.items()}
    base = readers[top]
    arch_field = base.fields[gguf.Keys.General.ARCHITECTURE]
    arch = str(arch_field.contents())
    writer = gguf.GGUFWriter(str(out), arch=arch, endianess=base.endianess)
    for field in base.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    by_name = {t: {tensor.name: tensor for tensor in r.tensors} for t, r in readers.items()}
    chosen = []
    for tensor in base.tensors:
        layer = _tensor_layer(tensor.name)
        source = layer_types.get(layer, top) if layer is not None else top
        chosen.append(by_name[source][tensor.name])
    counts: Counter[str] = Counter()
    for tensor in chosen:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype,
                               tensor.data.nbytes, tensor.tensor_type)
        counts[tensor.tensor_type.name] += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in chosen:
        writer.write_tensor_data(tensor.data, tensor_endianess=base.endianess)
    writer.close()
    return dict(sorted(counts.items()))


def quantize_by_band(model_dir: Path, bands: Mapping[int, str], target_gb: float | None,
                     work: Path, device: str) -> tuple[Path, dict[str, Any]]:
    """The mixed-precision GGUF of `model_dir` and what was done to make it."""
    from foundry.executors.real.gguf_convert import convert_to_gguf
    from foundry.executors.real.quant import quantize, verify_tier

    log = work / "llama-cpp.log"
    f16 = convert_to_gguf(model_dir, work / "model-F16.gguf", outtype="f16",
                          log_file=work / "gguf-convert.log")
    tiers: dict[str, Path] = {}
    shift = 0
    while True:
        layer_band = {i: BANDS[max(0, BANDS.index(b) - shift)] for i, b in bands.items()}
        types = {i: BAND_TYPES[b] for i, b in layer_band.items()}
        for t in set(types.values()):
            if t not in tiers:
                tiers[t] = quantize(f16, work / f"model-{t}.gguf", t, log)
        top = max(set(types.values()), key=lambda t: BANDS.index(
            next(b for b, bt in BAND_TYPES.items() if bt == t)))
        out = work / "model-compact.gguf"
        counts = assemble(tiers, types, top, out)
        size_gb = out.stat().st_size / 1e9
        lowest = all(b == BANDS[0] for b in layer_band.values())
        if target_gb is None or size_gb <= target_gb or lowest:
            break
        shift += 1
    verified = verify_tier(out, "compact", device, log)
    return out, {
        "layerTypes": {str(i): t for i, t in types.items()},
        "tensorTypes": counts,
        "bandShift": shift,
        "sizeGb": round(size_gb, 9),
        "targetSizeGb": target_gb,
        "targetMet": None if target_gb is None else size_gb <= target_gb,
        "hardwareVerified": [verified],
    }


def _profile(ctx: StageContext, model: Any, tokenizer: Any, reporter: StageReporter,
             notes: list[str]) -> tuple[dict[str, Any], str]:
    """An earlier profile stage's activation profile and its hash, else one made here."""
    found = find_profile(ctx, None)
    if found is not None:
        return found
    windows = calibration_windows(ctx, model, tokenizer, seq_len=PROFILE_SEQ_LEN)
    profile = profile_model(model, windows,
                            progress=lambda f: reporter.progress(0.4 * f, "profiling"))
    notes.append(f"profiled here: {profile['windows']} windows of {profile['seqLen']} tokens")
    return profile, profile_hash(profile)


def _remove_dead(model: Any, arch: Any, scores: dict[str, Any], dead: float) -> dict[str, int]:
    """Experts and MLP channels scored below the dead threshold, sliced out of the model;
    how many of each went (never so many experts that top-k cannot be routed)."""
    removed: dict[str, int] = {}
    if scores["experts"] and arch.moe is not None:
        top_k = int(getattr(model.config, arch.moe.top_k_key))
        kept = removal(scores["experts"], dead, top_k)
        n = len(next(iter(scores["experts"].values())))
        removed["experts"] = sum(n - len(v) for v in kept.values())
        if removed["experts"]:
            slice_experts(model, arch, kept)
    if scores["channels"] and arch.mlp is not None:
        kept = removal(scores["channels"], dead, 1)
        width = len(next(iter(scores["channels"].values())))
        removed["channels"] = sum(width - len(v) for v in kept.values())
        if removed["channels"]:
            slice_channels(model, arch, kept)
    return removed


def _quantize_or_size(ctx: StageContext, stage: CompactStage, model: Any,
                      scores: dict[str, Any], cuts: Any, metrics: dict[str, Any],
                      notes: list[str]) -> tuple[Path, ...]:
    """With enableQuantization, one GGUF quantized per layer band (toward targetSizeGb),
    its facts in `metrics`; else the safetensors' size. The files it wrote."""
    if not stage.enable_quantization:
        metrics["sizeGb"] = round(sum(p.stat().st_size for p in ctx.output_dir.iterdir()
                                      if p.suffix == ".safetensors") / 1e9, 9)
        return ()
    layer_band = layer_bands(scores, cuts, int(model.config.num_hidden_layers))
    metrics["layerBands"] = {str(i): b for i, b in layer_band.items()}
    target = float(stage.target_size_gb) if stage.target_size_gb is not None else None
    gguf_file, facts = quantize_by_band(ctx.output_dir, layer_band, target, ctx.work_dir,
                                        ctx.device)
    metrics.update(facts)
    metrics["finalSizeGb"] = facts["sizeGb"]
    if facts["targetMet"] is False:
        notes.append(f"targetSizeGb {target} not reached: {facts['sizeGb']} GB with "
                     f"every layer at the lowest band")
    return (gguf_file,)


class CompactExecutor:
    """`compact` on any supported family, dense or mixture-of-experts."""

    stage_type = "compact"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        stage = parse_stage(CompactStage, ctx.stage)
        cuts = thresholds(stage)
        set_seed(stage_seed(ctx))
        notes: list[str] = []
        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        arch = for_config(model.config)
        profile, digest = _profile(ctx, model, tokenizer, reporter, notes)
        scores = unit_scores(profile)
        bands: dict[str, dict[str, int]] = {}
        for kind, per_layer in scores.items():
            if per_layer:
                counted = Counter(band_of(s, cuts) for v in per_layer.values()
                                  for s in normalised(v))
                bands[kind] = {b: counted.get(b, 0) for b in BANDS}
        params_before = param_count(model)
        removed = _remove_dead(model, arch, scores, cuts[0])
        removed["heads"] = 0
        reporter.progress(0.5, f"removed {removed}")
        save_model(model, tokenizer, ctx.output_dir)
        reloaded, _ = load_model(ctx.output_dir)
        params_after = param_count(reloaded)
        if params_after != param_count(model):
            raise ExecutorError(f"the compacted model reloads with {params_after} parameters, "
                                f"not {param_count(model)}")
        metrics: dict[str, Any] = {
            "importanceInput": digest,
            "bands": bands,
            "removed": removed,
            "paramsBefore": params_before,
            "paramsAfter": params_after,
            "thresholds": dict(zip(BANDS[:-1], cuts, strict=True)),
        }
        files = _quantize_or_size(ctx, stage, model, scores, cuts, metrics, notes)
        (ctx.output_dir / PROFILE_FILE).unlink(missing_ok=True)
        reporter.progress(1.0, "compacted")
        return StageResult(output_dir=ctx.output_dir, files=files, metrics=metrics,
                           notes=tuple(notes))

