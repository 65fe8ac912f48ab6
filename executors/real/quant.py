"""The real `quant` stage: HF -> GGUF, llama.cpp quantization, and hardware verification.

The GGUF export is llama.cpp's own converter (`gguf_convert`), run in a child process: it knows
about 100 architectures and their tokenizers, and llama.cpp reads what it writes.

The model stays in HF form for later stages (output_dir is a copy of the input); the GGUF tiers
are extra files. Every tier is read back with `gguf.GGUFReader` and its real tensor types are
recorded, because llama.cpp silently falls back per tensor when a K-quant does not fit
(rows not a multiple of 256 -> Q5_0/Q8_0). Every tier, f32 included, is then loaded and run by
llama.cpp in a child process (a crash in native code cannot take the worker down, and the child's
peak RSS is the tier's own memory figure) and timed on a fixed greedy prompt.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from foundry.executors.base import StageContext, StageReporter, StageResult
from foundry.executors.errors import ExecutorError
from foundry.executors.quant_tiers import requested_types, unproducible_tiers
from foundry.executors.real.gguf_convert import CONVERTER, convert_to_gguf, converter_version

EXPORT_TYPES = ("F32", "F16")  # written by the GGUF converter, not by the quantizer
VERIFY_PROMPT = "def read_config(path):\n    "
VERIFY_TOKENS = 32
_K_BLOCK = 256

_VERIFY_SCRIPT = """
import json, os, resource, sys, time
import llama_cpp
path, prompt, n_tokens, gpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=os.cpu_count(), verbose=False,
                      n_gpu_layers=-1 if gpu else 0, seed=0)
llm.create_completion(prompt, max_tokens=4, temperature=0.0, top_k=1)  # warm-up, untimed
start = time.perf_counter()
out = llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0, top_k=1)
seconds = time.perf_counter() - start
try:  # VmHWM: this image's peak RSS (ru_maxrss would carry the forking parent's over exec)
    with open("/proc/self/status") as fh:
        rss_kb = int(next(ln.split()[1] for ln in fh if ln.startswith("VmHWM:")))
except (OSError, StopIteration):
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tokens": out["usage"]["completion_tokens"], "seconds": seconds,
                  "threads": os.cpu_count(),
                  "text": out["choices"][0]["text"], "rssBytes": rss_kb * 1024}))
"""


def supported_quant_types() -> list[str]:
    """Every llama.cpp file type this build can quantize to, e.g. ["BF16", ..., "Q8_0"]."""
    import llama_cpp

    prefix = "LLAMA_FTYPE_MOSTLY_"
    return sorted(n.removeprefix(prefix) for n in dir(llama_cpp) if n.startswith(prefix))


@contextlib.contextmanager
def stderr_to(log_file: Path) -> Iterator[None]:
    """Send C-level stderr (fd 2) to `log_file` for the duration: llama.cpp logs per tensor."""
    sys.stderr.flush()
    saved = os.dup(2)
    with log_file.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def quantize(src: Path, dst: Path, quant_type: str, log_file: Path) -> Path:
    """Quantize the GGUF `src` into `dst` with llama.cpp's `LLAMA_FTYPE_MOSTLY_<quant_type>`."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant_type}", None)
    if ftype is None:
        raise ExecutorError(
            f"unknown quant type {quant_type!r}; supported: "
            f"{', '.join([*EXPORT_TYPES, *supported_quant_types()])}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    with stderr_to(log_file):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                            ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise ExecutorError(f"llama.cpp failed to quantize to {quant_type} (rc={rc}); "
                            f"see its log {log_file.name}")
    return dst


def tensor_types(gguf_file: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(count per tensor type, count per non-K type among quantized tensors whose rows do
    not divide into 256-wide K-quant blocks) of a GGUF file, read back from its header."""
    import gguf

    reader = gguf.GGUFReader(gguf_file)
    counts: Counter[str] = Counter()
    unfit: Counter[str] = Counter()
    plain = {"F32", "F16", "BF16", "F64"}
    for tensor in reader.tensors:
        name = tensor.tensor_type.name
        counts[name] += 1
        ncols = int(tensor.shape[0])
        if name not in plain and not name.endswith("_K") and ncols % _K_BLOCK:
            unfit[name] += 1
    return dict(sorted(counts.items())), dict(sorted(unfit.items()))


def fallback_note(quant_type: str, unfit: Mapping[str, int]) -> str | None:
    """A note when a K-quant was asked for and some tensors got a non-K type instead."""
    if "_K" not in quant_type or not unfit:
        return None
    parts = ", ".join(f"{n} tensors fell back to {t}" for t, n in unfit.items())
    return f"{quant_type}: {parts} (rows not multiples of {_K_BLOCK})"


def verify_tier(gguf_file: Path, quant_type: str, device: str, log_file: Path,
                timeout_s: float = 300.0) -> dict[str, Any]:
    """Load `gguf_file` with llama.cpp in a child process and generate VERIFY_TOKENS greedily."""
    import llama_cpp

    gpu = device != "cpu" and bool(llama_cpp.llama_supports_gpu_offload())
    cmd = [sys.executable, "-c", _VERIFY_SCRIPT, str(gguf_file), VERIFY_PROMPT,
           str(VERIFY_TOKENS), "1" if gpu else "0"]
    with log_file.open("ab") as log:
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            raise ExecutorError(f"llama.cpp did not finish {quant_type} in {timeout_s}s") from e
    if proc.returncode != 0:
        raise ExecutorError(f"llama.cpp could not run the {quant_type} GGUF "
                            f"(exit {proc.returncode}); see {log_file.name}")
    run = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    tokens, seconds = int(run["tokens"]), float(run["seconds"])
    return {
        "device": device if gpu else "cpu",
        "format": f"gguf-{quant_type}",
        "sizeGb": round(gguf_file.stat().st_size / 1e9, 9),
        "tokensPerSec": round(tokens / seconds, 2) if seconds > 0 else 0.0,
        "memoryUsageGb": round(int(run["rssBytes"]) / 1e9, 6),
        "verified": tokens > 0,
        "generatedTokens": tokens,
        "threads": int(run["threads"]),
        "sample": run["text"],
    }


def _outtype(stage: Mapping[str, Any], types: list[str]) -> str:
    """The base export's type: the stage's `outtype`, else f16 when F16 is asked for."""
    outtype = str(stage.get("outtype") or ("f16" if "F16" in types else "f32")).lower()
    if outtype not in ("f32", "f16"):
        raise ExecutorError(f"outtype must be 'f32' or 'f16', not {outtype!r}")
    return outtype


def _export_and_quantize(ctx: StageContext, reporter: StageReporter, types: list[str],
                         outtype: str, convert_log: Path, log_file: Path
                         ) -> tuple[dict[str, Path], dict[str, float]]:
    """The base GGUF export (and an F32 one when asked for besides an f16 base), then every
    other requested type quantized from the base by llama.cpp; the tiers and the timings."""
    started = time.perf_counter()
    base_type = outtype.upper()
    tiers: dict[str, Path] = {
        base_type: convert_to_gguf(ctx.input_dir, ctx.work_dir / f"model-{base_type}.gguf",
                                   outtype=outtype, log_file=convert_log)}
    if "F32" in types and base_type != "F32":
        tiers["F32"] = convert_to_gguf(ctx.input_dir, ctx.work_dir / "model-F32.gguf",
                                       outtype="f32", log_file=convert_log)
    reporter.progress(0.1, f"exported {base_type} GGUF")
    timings = {"exportSeconds": round(time.perf_counter() - started, 3)}

    started = time.perf_counter()
    to_quantize = [t for t in types if t not in tiers]
    for i, quant_type in enumerate(to_quantize, 1):
        dst = ctx.work_dir / f"model-{quant_type}.gguf"
        tiers[quant_type] = quantize(tiers[base_type], dst, quant_type, log_file)
        reporter.progress(0.1 + 0.4 * i / len(to_quantize), f"quantized {quant_type}")
    timings["quantSeconds"] = round(time.perf_counter() - started, 3)
    return tiers, timings


class QuantExecutor:
    """Export GGUF, quantize each requested type, read back tensor types, verify every tier.

    Tiers: the stage's `quantTypes` plus the recipe's gguf `quantTiers` variants (upper-cased,
    de-duplicated). The base export is f32, or f16 when `F16` is requested or the stage says
    `"outtype": "f16"`; every other type is quantized from it by llama.cpp.
    """

    stage_type = "quant"

    def unproducible_tiers(self, tiers: Any) -> list[str]:
        """The quantTiers this worker cannot write: any format but gguf, and any gguf
        variant the llama.cpp it loads cannot quantize to (asked before a run starts)."""
        return unproducible_tiers(
            tiers, lambda: {*supported_quant_types(), *EXPORT_TYPES})

    def produced_tiers(self, stage: Mapping[str, Any], recipe: Mapping[str, Any]
                       ) -> frozenset[str]:
        """The tiers `run` writes: the requested types and the base export (F32, or F16)."""
        types = requested_types(stage, recipe)
        return frozenset(types) | {_outtype(stage, types).upper()}

    def run(self, ctx: StageContext, reporter: StageReporter) -> StageResult:
        types = requested_types(ctx.stage, ctx.recipe)
        known = set(supported_quant_types()) | set(EXPORT_TYPES)
        unknown = [t for t in types if t not in known]
        if unknown:
            raise ExecutorError(f"unknown quant types {unknown}; supported: {sorted(known)}")
        outtype = _outtype(ctx.stage, types)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        log_file = ctx.work_dir / "llama-cpp.log"
        convert_log = ctx.work_dir / "gguf-convert.log"
        notes: list[str] = []

        tiers, timings = _export_and_quantize(ctx, reporter, types, outtype, convert_log,
                                              log_file)

        all_types: dict[str, dict[str, int]] = {}
        for quant_type, path in tiers.items():
            counts, unfit = tensor_types(path)
            all_types[quant_type] = counts
            note = fallback_note(quant_type, unfit)
            if note:
                notes.append(note)

        started = time.perf_counter()
        verified: list[dict[str, Any]] = []
        for i, (quant_type, path) in enumerate(tiers.items(), 1):
            entry = verify_tier(path, quant_type, ctx.device, log_file)
            entry["tensorTypes"] = all_types[quant_type]
            verified.append(entry)
            reporter.progress(0.5 + 0.45 * i / len(tiers), f"verified {quant_type}",
                              {"tokensPerSec": entry["tokensPerSec"]})
        timings["verifySeconds"] = round(time.perf_counter() - started, 3)
        if ctx.device != "cpu" and any(v["device"] == "cpu" for v in verified):
            notes.append(f"llama.cpp in this worker has no GPU offload: verified on cpu, "
                         f"not {ctx.device}")

        shutil.copytree(ctx.input_dir, ctx.output_dir, dirs_exist_ok=True)
        sizes = {t: round(p.stat().st_size / 1e9, 9) for t, p in tiers.items()}
        reporter.progress(1.0, f"{len(tiers)} GGUF tiers verified")
        return StageResult(
            output_dir=ctx.output_dir,
            files=tuple(tiers.values()),
            metrics={
                "tensorTypes": all_types,
                "hardwareVerified": verified,
                "ggufSizes": sizes,
                "finalSizeGb": min(sizes.values()),
                "ggufConverter": f"{CONVERTER} {converter_version()}",
                **timings,
            },
            notes=tuple(notes),
        )
