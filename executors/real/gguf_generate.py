"""Completions from a GGUF tier through llama.cpp, for benchmarks that score the quantized model
a user deploys rather than the safetensors it came from.

llama.cpp runs in a child process, as quant.py's tier check does: a crash in native code (a
tier this build cannot load) fails the benchmark with its log, not the worker. The child reads
the prompts and sampling as one JSON document on stdin and prints one JSON list of completion
lists; greedy decoding is temperature 0 and top_k 1, sampled decoding uses the entry's
temperature and top_p with a seed per sample.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundry.executors.errors import ExecutorError

_SCRIPT = r"""
import json, os, sys
import llama_cpp
job = json.load(sys.stdin)
llm = llama_cpp.Llama(model_path=job["path"], n_ctx=job["nCtx"], n_threads=os.cpu_count(),
                      verbose=False, n_gpu_layers=0, seed=job["seed"])
out = []
for prompt in job["prompts"]:
    budget = min(job["maxTokens"], job["nCtx"] - len(llm.tokenize(prompt.encode())))
    texts = []
    for sample in range(job["samples"]):
        if budget <= 0:
            texts.append("")
            continue
        if job["greedy"]:
            kw = {"temperature": 0.0, "top_k": 1}
        else:
            kw = {"temperature": job["temperature"], "top_p": job["topP"],
                  "seed": job["seed"] + sample}
        got = llm.create_completion(prompt, max_tokens=budget, stop=job["stop"], **kw)
        texts.append(got["choices"][0]["text"])
    out.append(texts)
print(json.dumps(out))
"""

N_CTX = 2048  # HumanEval prompts are under 1,000 tokens; the budget is what is left of this


def tier_file(upstream: Sequence[Mapping[str, Any]], quant_type: str) -> dict[str, Any]:
    """The latest `model-<quant_type>.gguf` an earlier stage of this run wrote (a record with
    path and sha256). ExecutorError names the tiers there are when none matches."""
    wanted = f"model-{quant_type.upper()}.gguf"
    tiers: list[Mapping[str, Any]] = [f for f in upstream
                                      if str(f.get("path", "")).endswith(".gguf")]
    for record in reversed(tiers):
        if str(record["path"]) == wanted:
            return dict(record)
    there = sorted({str(f["path"]).removeprefix("model-").removesuffix(".gguf") for f in tiers})
    raise ExecutorError(
        f"humaneval gguf {quant_type!r}: no earlier stage of this run wrote that GGUF tier "
        f"(tiers written: {', '.join(there) or 'none; put a quant stage before this eval'})")


def completions(path: Path, label: str, prompts: Sequence[str], *, samples: int, greedy: bool,
                temperature: float, top_p: float, max_tokens: int, stop: Sequence[str],
                seed: int, log_file: Path, timeout_s: float = 3600.0) -> list[list[str]]:
    """`samples` completions of each prompt by the GGUF at `path` (`label`: its name, for
    messages; a stored blob's path is its hash), in prompt order."""
    job = {"path": str(path), "prompts": list(prompts), "samples": samples, "greedy": greedy,
           "temperature": temperature, "topP": top_p, "maxTokens": max_tokens,
           "stop": list(stop), "seed": seed, "nCtx": N_CTX}
    with log_file.open("ab") as log:
        try:
            proc = subprocess.run([sys.executable, "-c", _SCRIPT], input=json.dumps(job).encode(),
                                  stdout=subprocess.PIPE, stderr=log, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            raise ExecutorError(f"llama.cpp did not complete {len(prompts)} prompts in "
                                f"{timeout_s}s; see {log_file.name}") from e
    if proc.returncode != 0:
        raise ExecutorError(f"llama.cpp could not generate with {label} (exit "
                            f"{proc.returncode}); see {log_file.name}")
    got = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if len(got) != len(prompts) or any(len(texts) != samples for texts in got):
        raise ExecutorError(f"llama.cpp returned {len(got)} answers for {len(prompts)} prompts")
    return [[str(t) for t in texts] for texts in got]
