"""The signing key is created on first use (#14 item 4): with FOUNDRY_SIGNING=auto (the
default) the first sealed run on a machine without a key creates one and is signed with it;
`existing` signs only with a key made ahead, `off` never signs; two processes creating the
key at once end with one key."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.publishing.attestation import (
    PRIVATE_KEY_FILE,
    create_key,
    load_key,
    signing_key,
)
from foundry.adapters.settings import KeySettings
from tests.conftest import ok

R = "forge_recipes"


def _forge(store: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """One run on a Foundry opened now, so that it reads FOUNDRY_SIGNING as set."""
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(store) as foundry:
        rid = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
        run = ok(foundry.execute("forge/run", {"recipeId": rid}))
        artifact = ok(foundry.execute("data/read", {"collection": "forge_artifacts",
                                                    "id": run["artifactId"]}))["data"]
        verified = ok(foundry.execute("artifact/verify", {"subject": run["runId"]}))
    return {"artifact": artifact, "links": {x["name"]: x["status"] for x in verified["links"]}}


def test_auto_creates_the_key_on_the_first_sealed_run_and_signs_every_run_with_it(
        forge_env: Path, tmp_path: Path, recipe: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"  # forge_env's FOUNDRY_KEYS_DIR, empty
    monkeypatch.setenv("FOUNDRY_SIGNING", "auto")
    store = f"sqlite:///{tmp_path / 'f.db'}"
    assert not (keys / PRIVATE_KEY_FILE).exists()
    first = _forge(store, recipe)
    loaded = load_key(keys)
    assert loaded is not None and (keys / PRIVATE_KEY_FILE).stat().st_mode & 0o777 == 0o600
    key_id = loaded[1].key_id
    assert first["artifact"]["integrity"]["signature"]["keyId"] == key_id
    assert first["links"]["signature"] == "ok", first["links"]
    second = _forge(store, {**recipe, "name": "second"})
    # The same key, not a new one.
    assert second["artifact"]["integrity"]["signature"]["keyId"] == key_id


def test_existing_never_creates_a_key_and_off_never_signs(
        forge_env: Path, tmp_path: Path, recipe: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    store = f"sqlite:///{tmp_path / 'f.db'}"
    monkeypatch.setenv("FOUNDRY_SIGNING", "existing")
    unsigned = _forge(store, recipe)
    assert not unsigned["artifact"].get("integrity") and not keys.exists()
    assert unsigned["links"]["signature"] == "none"

    create_key(keys)
    monkeypatch.setenv("FOUNDRY_SIGNING", "off")
    off = _forge(store, {**recipe, "name": "off"})
    assert not off["artifact"].get("integrity")
    monkeypatch.setenv("FOUNDRY_SIGNING", "existing")
    signed = _forge(store, {**recipe, "name": "existing"})
    made = load_key(keys)
    assert made is not None
    assert signed["artifact"]["integrity"]["signature"]["keyId"] == made[1].key_id


def test_a_malformed_setting_is_refused_naming_the_variable(
        forge_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from foundry.adapters.bootstrap import Foundry
    from foundry.domain.errors import InvalidInputError

    monkeypatch.setenv("FOUNDRY_SIGNING", "sometimes")
    with pytest.raises(InvalidInputError, match=r"FOUNDRY_SIGNING.*auto, existing, off"):
        Foundry.open(f"sqlite:///{tmp_path / 'f.db'}").close()


def _create(args: tuple[str, Any]) -> tuple[str, bool]:
    directory, barrier = args
    barrier.wait()
    key, created = signing_key("auto", KeySettings(dir=Path(directory)))
    assert key is not None
    return key[1].key_id, created is not None


def test_processes_creating_the_key_at_once_end_with_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            results = pool.map(_create, [(str(tmp_path / "keys"), barrier)] * 4)
    ids = {key_id for key_id, _ in results}
    on_disk = load_key(tmp_path / "keys")
    assert on_disk is not None and ids == {on_disk[1].key_id}, results
    assert sum(created for _, created in results) == 1, results
