"""Which handler serves which command, and the params model it is validated against.

One table, assembled by bootstrap from the `COMMANDS` tuples of the handler modules (plain
data: importing a module registers nothing), read by every entrypoint: the Python API, the
CLI, and later HTTP. Like the executor registry (foundry.executors.registry), a second
handler for one name is an error unless it says `replace`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from foundry.domain.errors import InvalidInputError

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices

Result = dict[str, Any]
P = TypeVar("P", bound=BaseModel)
Scope = Literal["read", "write", "run", "publish"]
"""What a caller must be allowed to do; checked by the HTTP server's auth once it exists."""


@dataclass(frozen=True)
class CommandSpec(Generic[P]):
    """One command: its name, its params model, its handler and the scope it needs."""

    name: str
    params: type[P]
    handler: Callable[[P, CommandServices, Call], Result]
    scope: Scope = "read"
    summary: str = field(default="", compare=False)

    def run(self, params: BaseModel, services: CommandServices, call: Call) -> Result:
        """Call the handler with params already validated against `self.params`."""
        assert isinstance(params, self.params)
        return self.handler(params, services, call)


class CommandRegistry:
    """Command name -> CommandSpec."""

    def __init__(self, specs: Iterable[CommandSpec[Any]] = ()) -> None:
        self._specs: dict[str, CommandSpec[Any]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: CommandSpec[Any], *, replace: bool = False) -> None:
        """Add `spec`; a second one for a name needs `replace`."""
        if spec.name in self._specs and not replace:
            raise ValueError(f"a handler for command {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def get(self, name: str) -> CommandSpec[Any]:
        """The spec for `name`; an unknown name is the caller's error and lists the known."""
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInputError(
                "command", f"unknown command {name!r}; known: {', '.join(self.names())}")
        return spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[CommandSpec[Any]]:
        return iter(self._specs.values())
