"""Hub lineage beyond one repo (issue #14 item 5), against the local Hub (tests/hubserver.py)
with the fake executors, every card parsed back with huggingface_hub's ModelCard:

- `hf://org/repo?gguf=separate` puts the GGUF tiers in `org/repo-GGUF`, whose README says
  `base_model: org/repo`, `base_model_relation: quantized`; the parent's card links to it; both
  repos are Published events; a failure on the second repo is recorded and reported by name;
- a run forged from another Foundry artifact (its published folder as the source) names the
  parent's Hub repo as base_model, or, the parent never published to a Hub, the original id
  and a line that says so;
- the Hub settings are read once, when the Foundry opens (issue #15).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from huggingface_hub import ModelCard

from foundry.adapters.publishing.cards import card_hash
from foundry.adapters.publishing.gguf_repo import parse_hub_target
from foundry.domain.artifact_builder import artifact_id
from foundry.domain.errors import InvalidInputError
from tests.conftest import ok, run_events

A = "forge_artifacts"
R = "forge_recipes"

pytestmark = pytest.mark.usefixtures("forge_env")


def forged(foundry: Any, recipe: dict[str, Any]) -> str:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    assert result["status"] == "completed", result
    return str(result["runId"])


def publish(foundry: Any, run_id: str, target: str) -> dict[str, Any]:
    return dict(foundry.execute("forge/publish", {"id": run_id, "target": target}))


def card_meta(files: Mapping[str, bytes]) -> dict[str, Any]:
    card = ModelCard(files["README.md"].decode("utf-8"))
    return dict(card.data.to_dict())  # type: ignore[no-untyped-call]


def events_named(foundry: Any, run_id: str, name: str) -> list[Any]:
    return [e for e in run_events(foundry, run_id) if type(e).__name__ == name]


# --- GGUF tiers in their own repo ------------------------------------------------------------

@pytest.mark.parametrize(("query", "gguf_repo"), [
    ("separate", "org/model-GGUF"), ("tiers-org/model-quants", "tiers-org/model-quants")])
def test_gguf_tiers_go_to_their_own_repo_pointing_at_the_parent(
        hub: Any, foundry: Any, recipe: dict[str, Any], query: str, gguf_repo: str) -> None:
    run_id = forged(foundry, recipe)
    result = ok(publish(foundry, run_id, f"hf://org/model?gguf={query}"))

    model, tiers = hub.files("org/model"), hub.files(gguf_repo)
    ggufs = sorted(n for n in tiers if n.endswith(".gguf"))
    assert ggufs == ["model-Q4_K_M.gguf", "model-Q8_0.gguf"]  # the recipe's quantTiers
    assert sorted(tiers) == sorted([*ggufs, "README.md"])
    assert not [n for n in model if n.endswith(".gguf")]
    assert "README.md" in model and any(n.endswith(".alloy.json") for n in model)

    meta = card_meta(tiers)
    assert meta["base_model"] == "org/model"
    assert meta["base_model_relation"] == "quantized"
    assert "gguf" in meta["tags"]
    readme = model["README.md"].decode("utf-8")
    assert f"[{gguf_repo}]({hub.url}/{gguf_repo})" in readme  # the parent links to its tiers

    # Both repos are publications of the artifact, the model's last (its card is the receipt's).
    published = events_named(foundry, run_id, "Published")
    assert [(e.target, e.url) for e in published] == [
        (f"hf://{gguf_repo}", f"{hub.url}/{gguf_repo}"),
        ("hf://org/model", f"{hub.url}/org/model")]
    assert published[0].files == [*ggufs, "README.md"]
    assert published[0].card_hash == card_hash(tiers["README.md"].decode("utf-8"))
    artifact = ok(foundry.execute("data/read", {"collection": A, "id": artifact_id(run_id)}))
    receipt = artifact["data"]["receipt"]
    assert [p["url"] for p in receipt["publications"]] == [e.url for e in published]
    assert receipt["cardHash"] == card_hash(readme) == result["cardHash"]
    assert result["gguf"]["url"] == f"{hub.url}/{gguf_repo}"


def test_a_failure_on_the_gguf_repo_is_recorded_and_names_both_repos_and_the_files(
        hub: Any, foundry: Any, recipe: dict[str, Any]) -> None:
    run_id = forged(foundry, recipe)
    # 403 is not retried by huggingface_hub: the GGUF repo's first upload call fails at once.
    hub.fail_next("/api/models/org/model-GGUF/preupload", 403, request_id="req-gguf")
    failed = publish(foundry, run_id, "hf://org/model?gguf=separate")

    assert not failed["success"] and failed["errorCode"] == "publish_failed", failed
    message = failed["error"]
    for needed in ("hf://org/model-GGUF", "model-Q8_0.gguf", "model-Q4_K_M.gguf",
                   "hf://org/model was published", "req-gguf", "HTTP 403"):
        assert needed in message, (needed, message)
    assert "README.md" in hub.files("org/model")  # the first repo did go out
    assert hub.commits_to("org/model-GGUF") == []
    assert [e.target for e in events_named(foundry, run_id, "Published")] == ["hf://org/model"]
    (failure,) = events_named(foundry, run_id, "PublishFailed")
    assert failure.target == "hf://org/model-GGUF" and failure.request_id == "req-gguf"
    assert "model-Q8_0.gguf" in failure.message and failure.status == 403

    hub.heal()  # publishing again sends both
    ok(publish(foundry, run_id, "hf://org/model?gguf=separate"))
    assert "model-Q8_0.gguf" in hub.files("org/model-GGUF")


@pytest.mark.parametrize("target", [
    "hf://org/model?gguf=org/model", "hf://org/model?gguf=", "hf://org/model?quant=separate",
    "hf://org/model?gguf=separate&gguf=org/x", "hf://org/model?gguf=not a repo"])
def test_a_malformed_gguf_option_is_refused_before_anything_is_uploaded(
        hub: Any, foundry: Any, recipe: dict[str, Any], target: str) -> None:
    run_id = forged(foundry, recipe)
    refused = publish(foundry, run_id, target)
    assert not refused["success"] and refused["errorCode"] == "invalid_input", refused
    assert "target" in refused["error"]
    assert hub.commits == [] and events_named(foundry, run_id, "PublishFailed") == []
    with pytest.raises(InvalidInputError, match="target"):
        parse_hub_target(target)


# --- a chain's base_model ---------------------------------------------------------------------

def chain_registry(foundry: Any) -> None:
    """The fake executors, resolving an absolute path as the folder itself (the real resolver
    does so for a model folder) and a Hub id as the fake tiny model it stands for."""
    from foundry.executors.fake import build_fake_registry, resolve_fake_source

    def resolve(source: Mapping[str, Any]) -> Path:
        base = str(source["baseModel"])
        if base.startswith("/"):
            return Path(base)
        return resolve_fake_source({**source, "baseModel": "fake://tiny"})

    registry = build_fake_registry()
    registry.source_resolver = resolve
    foundry.use_registry(registry)


def child_of(recipe: dict[str, Any], folder: Path) -> dict[str, Any]:
    child = copy.deepcopy(recipe)
    child["name"] = "chained-child"
    child["source"]["baseModel"] = str(folder)
    child["stages"] = [s for s in child["stages"] if s["type"] in ("quant", "eval")]
    return child


def forged_parent(foundry: Any, recipe: dict[str, Any]) -> str:
    """The parent of a chain: the recipe forged from the Hub id acme/tiny-base."""
    chain_registry(foundry)
    parent = copy.deepcopy(recipe)
    parent["source"]["baseModel"] = "acme/tiny-base"
    return forged(foundry, parent)


def test_a_chain_names_the_parents_hub_repo_as_base_model(
        hub: Any, foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    parent_run = forged_parent(foundry, recipe)
    ok(publish(foundry, parent_run, "hf://org/parent"))
    ok(publish(foundry, parent_run, (tmp_path / "parent").as_uri()))  # the folder forged from

    child_run = forged(foundry, child_of(recipe, tmp_path / "parent"))
    ok(publish(foundry, child_run, "hf://org/child"))

    meta = card_meta(hub.files("org/child"))
    assert meta["base_model"] == "org/parent"  # not acme/tiny-base, nor the local path
    assert meta["base_model_relation"] == "quantized"  # the child only quantized
    readme = hub.files("org/child")["README.md"].decode("utf-8")
    assert f"Foundry artifact `{artifact_id(parent_run)}`" in readme
    assert f"[org/parent]({hub.url}/org/parent)" in readme


def test_an_unpublished_parent_leaves_the_original_id_and_says_so(
        hub: Any, foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    parent_run = forged_parent(foundry, recipe)
    # The weights and alloy beside each other, but no Hub publication of the parent.
    ok(publish(foundry, parent_run, (tmp_path / "parent").as_uri()))

    child_run = forged(foundry, child_of(recipe, tmp_path / "parent"))
    ok(publish(foundry, child_run, "hf://org/child"))

    meta = card_meta(hub.files("org/child"))
    assert meta["base_model"] == "acme/tiny-base"
    readme = hub.files("org/child")["README.md"].decode("utf-8")
    assert f"`{artifact_id(parent_run)}`" in readme
    assert "was not published to a Hub" in readme


def test_an_alloy_without_the_parents_weights_makes_no_chain(
        hub: Any, foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    parent_run = forged_parent(foundry, recipe)
    ok(publish(foundry, parent_run, "hf://org/parent"))
    folder = tmp_path / "parent"
    ok(publish(foundry, parent_run, folder.as_uri()))
    weights = [p for p in folder.iterdir()
               if not p.name.endswith((".gguf", ".alloy.json", ".md"))]
    assert weights
    for path in weights:  # the alloy now sits beside other weights
        path.write_bytes(path.read_bytes() + b" changed")

    child_run = forged(foundry, child_of(recipe, folder))
    ok(publish(foundry, child_run, "hf://org/child"))
    meta = card_meta(hub.files("org/child"))
    assert "base_model" not in meta  # a local folder is no Hub id, and no parent is claimed
    assert "Foundry artifact" not in hub.files("org/child")["README.md"].decode("utf-8")


# --- settings read once (#15) -------------------------------------------------------------------

def test_hub_settings_are_read_when_the_foundry_opens_and_never_again(
        hub: Any, foundry: Any, recipe: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = forged(foundry, recipe)
    # Changed after the Foundry opened: this Foundry keeps the hub and token it was built with.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_changed_later")
    monkeypatch.setenv("FOUNDRY_HUB_TIMEOUT", "not a number")
    result = ok(publish(foundry, run_id, "hf://org/once"))
    assert result["url"] == f"{hub.url}/org/once"
    assert "hf_changed_later" not in json.dumps(hub.auth_headers)
    assert UUID(result["runId"])


def test_the_hub_settings_validate_and_never_show_the_token() -> None:
    from foundry.adapters.settings import Settings

    settings = Settings.from_env({"HF_ENDPOINT": "http://hub.local/", "HF_TOKEN": "hf_SECRET",
                                  "FOUNDRY_HUB_TIMEOUT": "7.5"})
    assert settings.hub.base_url == "http://hub.local"
    assert settings.hub.token == "hf_SECRET" and settings.hub.timeout_seconds == 7.5
    assert "hf_SECRET" not in repr(settings) and "hf_SECRET" not in str(settings)
    assert Settings.from_env({}).hub.base_url == "https://huggingface.co"
    assert Settings.from_env({}).hub.timeout_seconds == 60.0
    for bad in ("0", "-1", "soon"):
        with pytest.raises(InvalidInputError, match="FOUNDRY_HUB_TIMEOUT"):
            Settings.from_env({"FOUNDRY_HUB_TIMEOUT": bad})


def test_verify_checks_a_split_publication_with_the_gguf_folder(
        hub: Any, foundry: Any, recipe: dict[str, Any], tmp_path: Path) -> None:
    """The model repo holds no GGUF tier after ?gguf=separate: verify with --model-dir alone
    says where they went and fails the files link; with --gguf-dir it checks both folders,
    and the GGUF repo's own model signature and provenance statement (signed runs)."""
    from foundry.adapters.publishing.attestation import create_key
    from foundry.adapters.publishing.model_signing import SIGNATURE_FILE, STATEMENT_FILE

    create_key(tmp_path / "keys")  # forge_env's key directory: the run is signed at its seal
    run_id = forged(foundry, recipe)
    result = ok(publish(foundry, run_id, "hf://org/model?gguf=separate"))
    assert {SIGNATURE_FILE, STATEMENT_FILE} <= set(result["gguf"]["files"])
    assert {SIGNATURE_FILE, STATEMENT_FILE} <= set(hub.files("org/model-GGUF"))
    folders = {}
    for repo, name in (("org/model", "model"), ("org/model-GGUF", "gguf")):
        folder = folders[name] = tmp_path / name
        for file, data in hub.files(repo).items():
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            (folder / file).write_bytes(data)
    alloy = next(folders["model"].glob("*.alloy.json"))

    def files_link(**params: Any) -> dict[str, Any]:
        result = ok(foundry.execute("artifact/verify", {"subject": str(alloy), **params}))
        return next(link for link in result["links"] if link["name"] == "files")

    alone = files_link(modelDir=str(folders["model"]))
    assert not alone["ok"] and "give that folder as --gguf-dir" in alone["found"], alone
    both = files_link(modelDir=str(folders["model"]), ggufDir=str(folders["gguf"]))
    assert both["ok"], both
    links = {link["name"]: link for link in ok(foundry.execute("artifact/verify", {
        "subject": str(alloy), "modelDir": str(folders["model"]),
        "ggufDir": str(folders["gguf"])}))["links"]}
    assert links["gguf modelSig"]["ok"] and links["gguf provenance"]["ok"], links
    assert links["modelSig"]["ok"] and links["provenance"]["ok"], links
    tier = folders["gguf"] / "model-Q8_0.gguf"
    tier.write_bytes(tier.read_bytes()[:-1] + b"\0")
    broken = files_link(modelDir=str(folders["model"]), ggufDir=str(folders["gguf"]))
    assert not broken["ok"] and "GGUF folder: model-Q8_0.gguf: content does not match" in (
        broken["found"]), broken
    links = {link["name"]: link for link in ok(foundry.execute("artifact/verify", {
        "subject": str(alloy), "modelDir": str(folders["model"]),
        "ggufDir": str(folders["gguf"])}))["links"]}
    assert not links["gguf modelSig"]["ok"] and not links["gguf provenance"]["ok"], links
    refused = foundry.execute("artifact/verify", {"subject": str(alloy),
                                                  "ggufDir": str(folders["gguf"])})
    assert not refused["success"] and "ggufDir" in refused["error"], refused
