"""The one activation profiler, and the `expert-activation-profile` stage that runs it.

`profile_model` runs calibration windows through a model with forward hooks and records, per
decoder layer and unit, what the compaction stages rank by:

- experts of a sparse block (the family's `MoeLayout`): `count` (tokens routed to the expert,
  one per (token, top-k slot)), `routerWeightSum` (sum of the top-k weight the block gives
  it), `routerL2` (L2 norm over every token of the router's softmax probability for it,
  routed or not), `outputNormSum` (sum of ||E_j(x)||_2 over routed tokens), `reap` (REAP
  saliency: mean over routed tokens of router weight x ||E_j(x)||_2, 0 for an expert never
  routed to) and `activationMagnitude` (mean over routed tokens of mean |act(gate) * up|);
- attention heads (`heads.outputNorm`: mean over tokens of the L2 norm of the head's slice of
  the output projection's input), linear-attention value heads likewise;
- dense MLP channels (`channels.activationMagnitude`: mean |act(gate) * up| per channel).

Expert outputs are recomputed from the fused tensors in the hook (transformers' fused expert
kernels do not expose per-expert outputs); the router is called as the model calls it, so the
top-k and its normalisation are the model's own.

The profile is canonical JSON (sorted keys, floats to 9 significant digits): the same model
and windows give the same bytes, so its SHA-256 names it. A stage returns it as an output
file (stored content-addressed, `importanceOutput` = its hash) and also leaves a copy in the
model directory it passes on (`PROFILE_FILE`), which is how a later stage of the same run
finds it; `importanceJson: "sha256:<hex>"` finds a stored one by hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from foundry.domain.values.stages import ExpertActivationProfileStage
from foundry.executors.architectures import Architecture, for_config
from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.real.common import (
    load_model,
    max_positions,
    parse_stage,
    set_seed,
    stage_seed,
)
from foundry.executors.real.data import corpus_for, token_windows

PROFILE_FORMAT = "foundry.activation-profile/1"
PROFILE_FILE = "foundry-activation-profile.json"
MAX_WINDOWS = 32  # calibration windows per profile: enough to rank experts, cheap on a CPU
EXPERT_STATS = ("count", "routerWeightSum", "routerL2", "outputNormSum", "reap",
                "activationMagnitude")


def _round(value: float) -> float:
    return float(f"{value:.9g}")


def canonical_bytes(profile: Mapping[str, Any]) -> bytes:
    return json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()


def profile_hash(profile: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(profile)).hexdigest()


class _Accumulator:
    """float64 running sums for one layer; turned into the profile's lists at the end."""

    def __init__(self) -> None:
        self.experts: dict[str, Any] = {}
        self.heads: Any = None
        self.channels: Any = None
        self.tokens = 0


def _expert_hook(acc: _Accumulator, block: Any, arch: Architecture) -> Callable[..., None]:
    import torch
    from torch.nn import functional

    moe = arch.moe
    assert moe is not None
    router, experts = getattr(block, moe.router), getattr(block, moe.experts)

    def hook(_module: Any, args: tuple[Any, ...], _output: Any) -> None:
        with torch.no_grad():
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            logits, weights, indices = router(x)
            probs = torch.softmax(logits.float(), dim=-1)
            gate_up = getattr(experts, moe.gate_up_proj)
            down = getattr(experts, moe.down_proj)
            n = int(gate_up.shape[0])
            stats = acc.experts or {k: torch.zeros(n, dtype=torch.float64) for k in EXPERT_STATS}
            acc.experts = stats
            stats["routerL2"] += probs.pow(2).sum(dim=0).double()  # sqrt taken at the end
            for e in range(n):
                token, slot = torch.where(indices == e)
                if token.numel() == 0:
                    continue
                gate, up = functional.linear(x[token], gate_up[e].float()).chunk(2, dim=-1)
                hidden = experts.act_fn(gate) * up
                out_norm = functional.linear(hidden, down[e].float()).norm(dim=-1).double()
                weight = weights[token, slot].double()
                stats["count"][e] += token.numel()
                stats["routerWeightSum"][e] += weight.sum()
                stats["outputNormSum"][e] += out_norm.sum()
                stats["reap"][e] += (weight * out_norm).sum()
                stats["activationMagnitude"][e] += hidden.abs().mean(dim=-1).double().sum()
            acc.tokens += int(x.shape[0])

    return hook


def _head_hook(acc: _Accumulator, head_dim: int) -> Callable[..., None]:
    import torch

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        with torch.no_grad():
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            norms = x.view(x.shape[0], -1, head_dim).norm(dim=-1).sum(dim=0)
            acc.heads = norms if acc.heads is None else acc.heads + norms

    return hook


def _channel_hook(acc: _Accumulator) -> Callable[..., None]:
    import torch

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        with torch.no_grad():
            x = args[0].reshape(-1, args[0].shape[-1]).double().abs().sum(dim=0)
            acc.channels = x if acc.channels is None else acc.channels + x

    return hook


def _sub(module: Any, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _install(model: Any, arch: Architecture) -> tuple[list[_Accumulator], list[Any], list[str]]:
    config = model.config
    kinds = arch.layer_kinds_of(config)
    accs, handles = [], []
    head_dim = int(getattr(config, "head_dim", 0)
                   or config.hidden_size // config.num_attention_heads)
    for i, layer in enumerate(model.model.layers):
        acc = _Accumulator()
        accs.append(acc)
        if kinds[i] == "linear_attention" and arch.linear_attention is not None:
            la = arch.linear_attention
            out = _sub(layer, f"{la.module}.{la.out_proj}")
            dim = int(getattr(config, "linear_value_head_dim", 0) or head_dim)
        else:
            out = _sub(layer, f"{arch.attention.module}.{arch.attention.o_proj}")
            dim = head_dim
        if out is not None:
            handles.append(out.register_forward_pre_hook(_head_hook(acc, dim)))
        if arch.is_sparse(layer):
            assert arch.moe is not None
            block = _sub(layer, arch.moe.module)
            handles.append(block.register_forward_hook(_expert_hook(acc, block, arch)))
        elif arch.mlp is not None:
            down = _sub(layer, f"{arch.mlp.module}.{arch.mlp.down_proj}")
            if down is not None:
                handles.append(down.register_forward_pre_hook(_channel_hook(acc)))
    return accs, handles, [str(k) for k in kinds]


def profile_model(model: Any, windows: Any, *, batch_size: int = 4,
                  progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """The activation profile of `model` over `windows` ([n, seq_len] token ids)."""
    import torch

    arch = for_config(model.config)
    accs, handles, kinds = _install(model, arch)
    device = next(model.parameters()).device
    tokens = 0
    try:
        with torch.no_grad():
            for start in range(0, int(windows.shape[0]), batch_size):
                batch = windows[start:start + batch_size].to(device)
                model(input_ids=batch, use_cache=False)
                tokens += int(batch.numel())
                if progress is not None:
                    progress(min(1.0, (start + batch_size) / int(windows.shape[0])))
    finally:
        for handle in handles:
            handle.remove()
    layers: list[dict[str, Any]] = []
    for i, acc in enumerate(accs):
        entry: dict[str, Any] = {"layer": i, "kind": kinds[i]}
        if acc.experts:
            s = acc.experts
            count = s["count"]
            per_routed = count.clamp(min=1)
            entry["experts"] = {
                "count": [int(v) for v in count.tolist()],
                "routerWeightSum": [_round(v) for v in s["routerWeightSum"].tolist()],
                "routerL2": [_round(math.sqrt(v)) for v in s["routerL2"].tolist()],
                "outputNormSum": [_round(v) for v in s["outputNormSum"].tolist()],
                "reap": [_round(v) for v in (s["reap"] / per_routed).tolist()],
                "activationMagnitude": [
                    _round(v) for v in (s["activationMagnitude"] / per_routed).tolist()],
            }
        if acc.heads is not None:
            entry["heads"] = {"outputNorm": [_round(v / tokens) for v in acc.heads.tolist()]}
        if acc.channels is not None:
            entry["channels"] = {
                "activationMagnitude": [_round(v / tokens) for v in acc.channels.tolist()]}
        layers.append(entry)
    config = model.config
    return {
        "format": PROFILE_FORMAT,
        "family": arch.family,
        "modelType": str(getattr(config, "model_type", "")),
        "numExperts": int(getattr(config, arch.moe.experts_key, 0) or 0) if arch.moe else 0,
        "topK": int(getattr(config, arch.moe.top_k_key, 0) or 0) if arch.moe else 0,
        "windows": int(windows.shape[0]),
        "seqLen": int(windows.shape[1]),
        "tokens": tokens,
        "layers": layers,
    }


def write_profile(profile: Mapping[str, Any], path: Path) -> str:
    """Write the canonical bytes of `profile` to `path`; return its content hash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_bytes(profile))
    return profile_hash(profile)


def read_profile(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ExecutorError(f"activation profile {path.name} is unreadable: {e}") from e
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ExecutorError(f"{path.name} is not an activation profile ({PROFILE_FORMAT})")
    return data


def find_profile(ctx: StageContext, reference: str | None) -> tuple[dict[str, Any], str] | None:
    """(profile, its hash) named by `reference` (sha256:<hex> or a path), else the one the
    input model carries, else None."""
    if reference:
        if reference.startswith("sha256:"):
            lookup = ctx.extras.get("blobPath") if ctx.extras else None
            if lookup is None:
                raise ExecutorError(
                    f"importanceJson {reference!r} names a stored profile by hash, but this "
                    "worker was given no blob store to read it from")
            try:
                path = Path(lookup(reference))
            except ValueError as e:
                raise ExecutorError(f"importanceJson: {e}") from e
            if not path.is_file():
                raise ExecutorError(f"importanceJson {reference!r}: no stored blob has that hash")
        else:
            path = Path(reference).expanduser()
            if not path.is_file():
                raise ExecutorError(f"importanceJson {reference!r}: no such file")
        profile = read_profile(path)
        found = profile_hash(profile)
        if reference.startswith("sha256:") and found != reference:
            raise ExecutorError(f"importanceJson {reference!r}: the stored profile hashes to "
                                f"{found}")
        return profile, found
    carried = ctx.input_dir / PROFILE_FILE
    if carried.is_file():
        profile = read_profile(carried)
        return profile, profile_hash(profile)
    return None


def calibration_windows(ctx: StageContext, model: Any, tokenizer: Any, *, seq_len: int,
                        max_windows: int = MAX_WINDOWS) -> Any:
    seq = max(2, min(seq_len, max_positions(model)))
    return token_windows(tokenizer, corpus_for(ctx), split="calibration", seq_len=seq,
                         max_windows=max_windows, seed=stage_seed(ctx))


class ExpertActivationProfileExecutor:
    """`expert-activation-profile`: profile the input model; the model passes through."""

    stage_type = "expert-activation-profile"

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        stage = parse_stage(ExpertActivationProfileStage, ctx.stage)
        set_seed(stage_seed(ctx))
        model, tokenizer = load_model(ctx.input_dir, device=ctx.device)
        arch = for_config(model.config)
        if arch.moe is None or not any(arch.is_sparse(layer) for layer in model.model.layers):
            raise ExecutorError(
                f"expert-activation-profile needs a mixture-of-experts model; "
                f"{arch.family} has no sparse layer here (compact profiles dense models)")
        notes: list[str] = []
        ref = ctx.recipe.get("calibrationCorpus") or {}
        if stage.calibration_corpus and stage.calibration_corpus != ref.get("name"):
            notes.append(f"calibrationCorpus {stage.calibration_corpus!r} is read from the "
                         f"recipe's calibrationCorpus {ref.get('name')!r}")
        if stage.device and stage.device != ctx.device:
            notes.append(f"device {stage.device!r} requested: ran on {ctx.device}")
        windows = calibration_windows(ctx, model, tokenizer, seq_len=stage.max_length)
        profile = profile_model(model, windows,
                                progress=lambda f: reporter.progress(0.9 * f, "profiling"))
        name = Path(stage.importance_output).name if stage.importance_output else None
        out_file = ctx.work_dir / (name or "expert-activation-profile.json")
        digest = write_profile(profile, out_file)
        # The model passes through byte for byte; the profile rides along for later stages.
        shutil.copytree(ctx.input_dir, ctx.output_dir, dirs_exist_ok=True)
        write_profile(profile, ctx.output_dir / PROFILE_FILE)
        reporter.progress(1.0, "profiled")
        sparse = [entry for entry in profile["layers"] if "experts" in entry]
        never = sum(c == 0 for entry in sparse for c in entry["experts"]["count"])
        return StageResult(
            output_dir=ctx.output_dir,
            files=(out_file,),
            metrics={
                "importanceOutput": digest,
                "metric": stage.metric,
                "profiledLayers": len(sparse),
                "profiledTokens": profile["tokens"],
                "windows": profile["windows"],
                "seqLen": profile["seqLen"],
                "expertsNeverRouted": int(never),
            },
            notes=tuple(notes),
        )
