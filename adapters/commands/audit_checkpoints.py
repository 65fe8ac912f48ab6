"""audit/checkpoint and audit/checkpoints: signed checkpoints over both event logs
(adapters/publishing/checkpoints.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundry.adapters.commands.registry import CommandSpec
from foundry.adapters.publishing.checkpoints import verify_checkpoints, write_checkpoint
from foundry.domain import commands as c

if TYPE_CHECKING:
    from foundry.adapters.commands.ports import Call, CommandServices


def checkpoint(_cmd: c.AuditCheckpoint, services: CommandServices, _call: Call
               ) -> dict[str, Any]:
    return {"checkpoint": write_checkpoint(services)}


def checkpoints(_cmd: c.AuditCheckpoints, services: CommandServices, _call: Call
                ) -> dict[str, Any]:
    return verify_checkpoints(services)


COMMANDS: tuple[CommandSpec[Any], ...] = (
    CommandSpec("audit/checkpoint", c.AuditCheckpoint, checkpoint, "write",
                "sign a checkpoint of both event logs as they are now"),
    CommandSpec("audit/checkpoints", c.AuditCheckpoints, checkpoints, "read",
                "recompute every signed checkpoint from the database; name any rewrite"),
)
