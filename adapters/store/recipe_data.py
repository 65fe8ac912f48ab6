"""What the recipe store accepts as a recipe's data: the authored fields, validated."""

from __future__ import annotations

from typing import Any

from foundry.domain.validation import validate_model
from foundry.domain.values import ForgeRecipe
from foundry.projections.recipes.fold import META_FIELDS


def validate_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """Validate authored recipe data (the view's own fields dropped); returns its canonical
    wire form. data/* and alloy import both go through here."""
    authored = {k: v for k, v in data.items() if k not in META_FIELDS}
    return validate_model(ForgeRecipe, authored, prefix="data").to_wire()
