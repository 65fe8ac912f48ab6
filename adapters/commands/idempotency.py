"""A commandId names one command: repeating it with the same params returns the first result;
reusing it with other params is a `command_conflict` naming the first command.

The store keeps, per commandId, the result of the command that used it (in the transaction
of its events). Whether a repeat is "the same command" is judged against what that command
did, read back from the recipe's events: the same entity, and the same data written (for an
edit: the same change applied to the revision it was applied to). So the rule needs no
second record of the params, and holds for commands stored before it existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from foundry.adapters.errors import CommandConflictError

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import CommandServices

Result = dict[str, Any]
# What each recipe event is the trace of, for naming the first command.
_EVENT_COMMANDS = {"Created": "data/create", "Edited": "data/update or data/upsert",
                   "Archived": "data/delete", "Forked": "recipe/fork"}


def check_repeat(services: CommandServices, command_id: str | None,
                 same: Callable[[Result], bool]) -> None:
    """If `command_id` was used before, `same(prior result)` must hold; else the conflict."""
    if not command_id:
        return
    prior = services.recipes.prior_result(command_id)
    if prior is not None and not same(prior):
        raise CommandConflictError(command_id, first_command(services, command_id, prior))


def data_at(services: CommandServices, recipe_id: str, revision: int) -> Result:
    """The recipe's authored data as it stood at `revision`, without its id."""
    recipe = services.recipes.get_recipe(UUID(recipe_id), version=revision)
    return {k: v for k, v in recipe.data.items() if k != "id"}


def without_id(data: Result) -> Result:
    return {k: v for k, v in data.items() if k != "id"}


def first_command(services: CommandServices, command_id: str, prior: Result) -> str:
    """`data/create on recipe <id> (revision 1)`: the command that used `command_id`."""
    recipe_id = str(prior.get("id", ""))
    try:
        stored = services.recipes.recorder.select_events(UUID(recipe_id))
    except ValueError:
        return "another command"
    for record in stored:
        event = services.recipes.mapper.to_domain_event(record)
        if getattr(event, "command_id", None) == command_id:
            kind = type(event).__name__
            return (f"{_EVENT_COMMANDS.get(kind, kind)} on recipe {recipe_id} "
                    f"(revision {event.originator_version})")
    return f"a command on recipe {recipe_id}"


def is_create(prior: Result) -> bool:
    return not {"changes", "deleted", "parentRecipeId"} & prior.keys()


def is_edit(prior: Result) -> bool:
    return "changes" in prior
