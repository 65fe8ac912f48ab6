"""Signing is part of sealing (#17 item 3): a crash between `Sealed` and `Signed` used to leave
a run sealed and unsigned for good, and a resumed sealed run completed unsigned."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ok, run_events

R = "forge_recipes"


def _names(foundry: Any, run_id: str) -> list[str]:
    return [type(e).__name__ for e in run_events(foundry, run_id)]


def _worker_died(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash above was an exception in this process, whose pid the attempt records; what
    follows a real crash is a dead owner, which is what resume then sees."""
    from foundry.adapters.commands import forge

    monkeypatch.setattr(forge, "_pid_alive", lambda _pid: False)


def _recipe(foundry: Any, recipe_data: dict[str, Any]) -> str:
    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    return str(ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"])


def test_a_failed_signature_leaves_the_run_unsealed_and_resume_seals_and_signs(
        forge_env: Path, foundry: Any, recipe_data: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from foundry.adapters.publishing import attestation

    attestation.create_key(forge_env.parent / "keys")
    real_sign = attestation.sign_artifact

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("the machine went down while signing")

    monkeypatch.setattr(attestation, "sign_artifact", crash)
    first = foundry.execute("forge/run", {"recipeId": _recipe(foundry, recipe_data)})
    assert first["success"] is False, first
    [run_id] = [r["runId"] for r in ok(foundry.execute("forge/list-runs", {}))["runs"]]
    assert "Sealed" not in _names(foundry, run_id)  # never sealed without its signature

    monkeypatch.setattr(attestation, "sign_artifact", real_sign)
    _worker_died(monkeypatch)
    resumed = ok(foundry.execute("forge/resume", {"runId": run_id}))
    assert resumed["status"] == "completed", resumed
    names = _names(foundry, run_id)
    assert names.count("Sealed") == 1 and names.count("Signed") == 1, names
    assert names.index("Signed") == names.index("Sealed") + 1, names


def test_a_sealed_unsigned_run_is_signed_when_resumed(
        forge_env: Path, foundry: Any, recipe_data: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealed under a store with no key, then crashed before completing; a key exists by the
    time it is resumed: the resume signs it before it completes."""
    from foundry.adapters.publishing import attestation
    from foundry.domain.forge_run import ForgeRun

    real_complete = ForgeRun.complete

    def crash(self: ForgeRun, **_kwargs: Any) -> None:
        raise OSError("the worker died after sealing")

    monkeypatch.setattr(ForgeRun, "complete", crash)
    first = foundry.execute("forge/run", {"recipeId": _recipe(foundry, recipe_data)})
    assert first["success"] is False, first
    [run_id] = [r["runId"] for r in ok(foundry.execute("forge/list-runs", {}))["runs"]]
    names = _names(foundry, run_id)
    assert "Sealed" in names and "Signed" not in names, names

    monkeypatch.setattr(ForgeRun, "complete", real_complete)
    _worker_died(monkeypatch)
    attestation.create_key(forge_env.parent / "keys")
    resumed = ok(foundry.execute("forge/resume", {"runId": run_id}))
    assert resumed["status"] == "completed", resumed
    assert "Signed" in _names(foundry, run_id)
    doc = ok(foundry.execute("data/read", {"collection": "forge_artifacts",
                                           "id": resumed["artifactId"]}))["data"]
    assert doc["integrity"]["signature"], doc
