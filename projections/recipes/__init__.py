"""The current-recipe view: one row per recipe, rebuilt from RecipeBook events."""
