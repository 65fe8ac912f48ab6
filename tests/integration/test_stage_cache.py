"""The stage cache by fingerprint (issue #14 item 3), on SQLite and PostgreSQL stores with the
deterministic fake executors: a second forge reuses every stage whose fingerprint a completed
stage has, names where it came from (event, lineage, replay), `reuse: false` recomputes, and
a cached blob that fails its hash check is never reused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from foundry.adapters.runs.stage_cache import FingerprintParts
from foundry.adapters.store.blobs import FileRecord
from foundry.domain.run_state import stage_key
from tests.conftest import ok, run_events

R = "forge_recipes"


# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


@pytest.fixture
def recipe(recipe_data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    data["cycles"] = 1
    return data


def forge(foundry: Any, recipe: dict[str, Any], **params: Any) -> dict[str, Any]:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id, **params}))
    assert result["status"] == "completed", result
    return result


def names(foundry: Any, run_id: str, kind: str) -> list[tuple[int, int]]:
    return [(e.cycle, e.index) for e in run_events(foundry, run_id)
            if type(e).__name__ == kind]


def test_a_fork_changing_only_the_quant_tiers_reuses_every_stage_before_quant(
        foundry: Any, recipe: dict[str, Any]) -> None:
    first = forge(foundry, recipe)
    fork = copy.deepcopy(recipe)
    fork["name"] += "-fork"
    fork["quantTiers"][0]["variants"] = fork["quantTiers"][0]["variants"][:1]
    quant = next(i for i, s in enumerate(fork["stages"]) if s["type"] == "quant")
    fork["stages"][quant]["quantTypes"] = fork["stages"][quant]["quantTypes"][:1]
    fork["stages"][0]["notes"] = "reworded"  # prose: not in the fingerprint, still reused
    second = forge(foundry, fork)

    reused = names(foundry, second["runId"], "StageReused")
    assert reused == [(1, i) for i in range(quant)], reused
    assert names(foundry, second["runId"], "StageStarted") == [
        (1, i) for i in range(quant, len(fork["stages"]))]
    events = [e for e in run_events(foundry, second["runId"]) if type(e).__name__ == "StageReused"]
    assert all(e.reused_from["runId"] == first["runId"] for e in events)
    assert [e.reused_from["index"] for e in events] == list(range(quant))

    lineage = ok(foundry.execute("lineage/report", {"id": second["runId"]}))
    stages = lineage["runs"][0]["stages"]
    assert [s["reusedFrom"]["runId"] for s in stages[:quant]] == [first["runId"]] * quant
    assert all(s["reusedFrom"] is None for s in stages[quant:])
    replay = ok(foundry.execute("audit/replay", {"runId": second["runId"]}))
    assert replay["ok"], replay
    assert [(r["index"], r["from"]["runId"]) for r in replay["reusedStages"]] == [
        (i, first["runId"]) for i in range(quant)]


def test_the_same_recipe_again_reuses_every_stage_and_seals_the_same_results(
        foundry: Any, recipe: dict[str, Any]) -> None:
    first = forge(foundry, recipe)
    again = copy.deepcopy(recipe)
    again["name"] += "-again"
    second = forge(foundry, again)
    assert names(foundry, second["runId"], "StageStarted") == []
    assert len(names(foundry, second["runId"], "StageReused")) == len(recipe["stages"])
    a, b = (foundry.runs.get_run(UUID(r["runId"])).state for r in (first, second))
    assert a["benchmarks"] == b["benchmarks"] and a["benchmarks"]


def test_reuse_false_computes_every_stage(foundry: Any, recipe: dict[str, Any]) -> None:
    forge(foundry, recipe)
    again = copy.deepcopy(recipe)
    again["name"] += "-again"
    second = forge(foundry, again, reuse=False)
    assert names(foundry, second["runId"], "StageReused") == []
    assert len(names(foundry, second["runId"], "StageStarted")) == len(recipe["stages"])


def test_a_cached_blob_that_fails_its_hash_check_is_never_reused(
        foundry: Any, recipe: dict[str, Any]) -> None:
    first = forge(foundry, recipe)
    state = foundry.runs.get_run(UUID(first["runId"])).state
    stage = state["stages"][stage_key(1, 1)]
    record = FileRecord.from_dict(next(f for f in stage["files"] if f["role"] == "model"))
    path = foundry.blobs.path_of(record.sha256)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))

    again = copy.deepcopy(recipe)
    again["name"] += "-again"
    second = forge(foundry, again)
    # Stage 0 is intact and reused; stage 1's model blob is changed, so stage 1 is computed
    # again (and everything after it, whose input is that recomputed model... which is the
    # same bytes as before, so the later stages may be reused again from the first run).
    assert (1, 0) in names(foundry, second["runId"], "StageReused")
    assert (1, 1) in names(foundry, second["runId"], "StageStarted")
    assert (1, 1) not in names(foundry, second["runId"], "StageReused")
    assert foundry.blobs.verify(record.sha256)  # the recomputed stage wrote the blob anew


# --- the fingerprint changes when any one of its parts changes -----------------------------

BASE = FingerprintParts(
    input_hash="sha256:" + "a" * 64, config={"type": "prune", "level": 0.3, "notes": "x"},
    corpus_hash="sha256:" + "c" * 64, executor_code="sha256:" + "e" * 64,
    libraries={"torch": "2.13.0", "transformers": "4.57.0"}, seed=0, device_class="cpu",
)


def changed(**part: Any) -> str:
    fields = {**BASE.__dict__, **part}
    return FingerprintParts(**fields).fingerprint()


def test_the_fingerprint_is_stable() -> None:
    assert changed() == BASE.fingerprint()


def test_the_fingerprint_changes_with_the_input_model() -> None:
    assert changed(input_hash="sha256:" + "b" * 64) != BASE.fingerprint()


def test_the_fingerprint_changes_with_the_config() -> None:
    assert changed(config={"type": "prune", "level": 0.4, "notes": "x"}) != BASE.fingerprint()


def test_the_fingerprint_ignores_the_notes() -> None:
    assert changed(config={"type": "prune", "level": 0.3, "notes": "y"}) == BASE.fingerprint()


def test_the_fingerprint_changes_with_the_corpus() -> None:
    assert changed(corpus_hash="sha256:" + "d" * 64) != BASE.fingerprint()
    assert changed(corpus_hash=None) != BASE.fingerprint()


def test_the_fingerprint_changes_with_the_executor_code() -> None:
    assert changed(executor_code="sha256:" + "f" * 64) != BASE.fingerprint()


def test_the_fingerprint_changes_with_a_library_version() -> None:
    assert changed(libraries={"torch": "2.13.1", "transformers": "4.57.0"}) \
        != BASE.fingerprint()


def test_the_fingerprint_changes_with_the_seed() -> None:
    assert changed(seed=1) != BASE.fingerprint()


def test_the_fingerprint_changes_with_the_device_class() -> None:
    assert changed(device_class="cuda") != BASE.fingerprint()


def test_the_executor_code_version_is_the_hash_of_its_module(tmp_path: Path) -> None:
    import hashlib
    import inspect

    from foundry.adapters.runs.stage_cache import executor_code_version
    from foundry.executors.fake import FakeExecutor

    source = Path(inspect.getsourcefile(FakeExecutor) or "")
    expected = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert executor_code_version(FakeExecutor.__new__(FakeExecutor)) == expected


def test_the_fingerprint_changes_with_the_base_model() -> None:
    assert changed(base_hash="sha256:" + "1" * 64) != BASE.fingerprint()


def test_the_fingerprint_changes_with_an_earlier_stages_extra_output() -> None:
    assert changed(upstream_outputs=("model-Q8_0.gguf=sha256:" + "2" * 64,)) \
        != BASE.fingerprint()


def test_the_fingerprint_changes_with_a_recipe_field_the_executor_reads() -> None:
    from foundry.adapters.runs.stage_cache import recipe_reads

    one = recipe_reads("quant", {"quantTiers": [{"format": "gguf", "variants": ["Q8_0"]}]})
    two = recipe_reads("quant", {"quantTiers": [{"format": "gguf", "variants": ["Q4_K_M"]}]})
    assert changed(recipe_reads=one) != changed(recipe_reads=two)
    # prune reads no recipe field besides the corpus: quantTiers leaves its print alone
    assert recipe_reads("prune", {"quantTiers": [1]}) == recipe_reads("prune", {}) == {}
