"""Issue #16 item 8: licenseStrategy. A derived model is published under its base model's
license (read from the source's card or config) unless the recipe overrides it with a reason.
A real tiny checkpoint saved by transformers, with a hub-style card; real executors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from foundry.adapters.publishing.source_license import card_license
from tests.conftest import ok

pytestmark = pytest.mark.slow
R = "forge_recipes"


def tiny_base(out: Path, card: str) -> Path:
    from tests.unit.adapters.test_model_params import tiny_qwen3_moe

    tiny_qwen3_moe(out)
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


def recipe(base: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "licensed", "version": "0.1.0",
            "source": {"baseModel": str(base), "architecture": "qwen3_moe"},
            "stages": [{"type": "source-config", "contextLength": 256}], **extra}


@pytest.fixture
def foundry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOUNDRY_EXECUTORS", "real")
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(tmp_path / "keys"))
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(f"sqlite:///{tmp_path / 'f.db'}") as f:
        yield f


def forge(foundry: Any, data: dict[str, Any]) -> str:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert run["status"] == "completed", run
    return str(run["runId"])


def test_publishing_under_another_license_than_the_base_needs_an_override(foundry, tmp_path):
    base = tiny_base(tmp_path / "base", "---\nlicense: other\nlicense_name: qwen\n---\n# Base\n")
    default = forge(foundry, recipe(base))  # license apache-2.0 by default, base says other
    refused = foundry.execute("forge/publish", {"id": default,
                                                "target": (tmp_path / "a").as_uri()})
    assert not refused["success"] and refused["errors"][0]["field"] == "license", refused
    assert "other" in refused["error"] and "licenseStrategy" in refused["error"]
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    forced = foundry.execute("forge/publish", {"id": default, "target": (tmp_path / "a").as_uri(),
                                               "force": True, "reason": "try"})
    assert not forced["success"]  # --force is for the gate, not the license

    inherited = forge(foundry, {**recipe(base), "name": "inherits", "license": "other"})
    ok(foundry.execute("forge/publish", {"id": inherited, "target": (tmp_path / "b").as_uri()}))
    overridden = forge(foundry, {**recipe(base), "name": "overrides",
                                 "licenseStrategy": "override",
                                 "licenseReason": "the base's terms allow relicensing"})
    ok(foundry.execute("forge/publish", {"id": overridden,
                                         "target": (tmp_path / "c").as_uri()}))
    doc = ok(foundry.execute("data/read", {"collection": "forge_artifacts", "id": ok(
        foundry.execute("forge/status", {"runId": overridden}))["artifactId"]}))["data"]
    assert doc["licenseStrategy"] == "override"


def test_an_override_without_a_reason_is_refused_when_written(foundry, tmp_path):
    refused = foundry.execute("data/create", {"collection": R, "data": recipe(
        tmp_path / "x", licenseStrategy="override")})
    assert not refused["success"] and "licenseReason" in refused["error"], refused


@pytest.mark.parametrize(("card", "found"), [
    ("---\nlicense: apache-2.0\n---\n", "apache-2.0"),
    ("---\ntags: [a]\nlicense:\n- MIT\n---\n", "mit"),
    ("# no front matter\nlicense: mit\n", None),
    ("---\ntags: [a]\n---\nlicense: mit\n", None),
])
def test_the_card_license_is_read_from_the_front_matter_only(card, found):
    assert card_license(card) == found
