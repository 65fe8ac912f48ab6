"""Hub lineage in the cards (issue #14 item 5): the README's front matter carries base_model
and base_model_relation, sent to the local Hub (tests/hubserver.py, which validates the YAML
as the Hub does) and parsed back with huggingface_hub's ModelCard."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from huggingface_hub import ModelCard

from foundry.adapters.publishing.cards import base_model_relation, render_cards
from tests.conftest import ok

R = "forge_recipes"


# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


def test_a_forged_cards_lineage_round_trips_through_the_local_hub_and_model_card(
        hub: Any, foundry: Any, recipe_data: dict[str, Any], tmp_path: Path) -> None:
    from foundry.adapters.publishing.hub import upload_to_hub
    from foundry.adapters.publishing.publish import publishable_artifact

    data = copy.deepcopy(recipe_data)
    data["source"]["baseModel"] = "fake://tiny"
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": data}))["id"]
    run = ok(foundry.execute("forge/run", {"recipeId": recipe_id}))
    artifact = publishable_artifact(foundry.runs.get_run(UUID(run["runId"])).state)
    # The fake executors forge only fake:// sources, which are no Hub id: the card of the
    # same forged artifact is rendered as if its source were the Hub model it stands for.
    artifact["source"] = {**artifact["source"], "baseModel": "acme/tiny-base"}
    folder = tmp_path / "cards"
    folder.mkdir()
    for name, text in render_cards(artifact).items():
        (folder / name).write_text(text, encoding="utf-8")
    upload_to_hub("org/lineage", folder, ("README.md", "MODEL_METHODOLOGY.md"),
                  hub=foundry.settings.hub)

    card = ModelCard(hub.files("org/lineage")["README.md"].decode("utf-8"))
    assert card.data.base_model == "acme/tiny-base"
    # prune + train + merged LoRA + quant: new weights derived from the base
    assert card.data.to_dict()["base_model_relation"] == "finetune"


def stages(*specs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"source": {"baseModel": "acme/base"},
            "stages": [{"type": t, **config} for t, config in specs]}


@pytest.mark.parametrize(("specs", "relation"), [
    ((("quant", {}), ("eval", {})), "quantized"),
    ((("lora", {"mergeAfter": False}), ("eval", {})), "adapter"),
    ((("lora", {"mergeAfter": True}), ("quant", {})), "finetune"),
    ((("prune", {}), ("train", {}), ("quant", {})), "finetune"),
    ((("merge", {}),), "merge"),
    ((("eval", {}),), None),
])
def test_the_relation_says_what_the_stages_did(specs: tuple[Any, ...],
                                              relation: str | None) -> None:
    artifact = stages(*specs)
    assert base_model_relation(artifact) == relation
    meta = ModelCard(render_cards({**artifact, "recipeName": "x"})["README.md"]).data.to_dict()
    assert meta.get("base_model_relation") == relation


def test_no_relation_without_a_hub_base_model() -> None:
    artifact = {**stages(("quant", {})), "source": {"baseModel": "./local/model"}}
    meta = ModelCard(render_cards(artifact)["README.md"]).data.to_dict()
    assert "base_model" not in meta and "base_model_relation" not in meta
