"""Which node this process is, so that in-process execution never claims other hardware.

`forge/run` with `hardwareNode: "m5-pro@local"` on a CPU machine used to run right here and
seal an artifact saying `m5-pro@local`. Now each process knows its node: the class and site
configured (FOUNDRY_NODE_CLASS, FOUNDRY_NODE_SITE, as `foundry worker --class/--site` labels a
Ray worker), else detected: class `cpu` (or the CUDA device's name when the executors run on
a GPU), site the host name. The in-process dispatcher refuses a hardwareNode whose class or
site this node is not, naming both; the Ray dispatcher leaves such a run requested for a
worker of that class, with the reason (adapters/fleet).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from foundry.adapters.fleet.placement import NodeTarget

ENV_NODE_CLASS = "FOUNDRY_NODE_CLASS"
ENV_NODE_SITE = "FOUNDRY_NODE_SITE"
# The site every node answers to: "this machine" (the default hardwareNode is cpu@local).
LOCAL_SITE = "local"


def slug(text: str) -> str:
    """A label value: lowercase letters, digits, '.', '_' and '-' (63 at most)."""
    value = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:63].strip("-._")
    return value or "unknown"


@dataclass(frozen=True)
class LocalNode:
    node_class: str
    site: str

    def __str__(self) -> str:
        return f"{self.node_class}@{self.site}"

    def mismatch(self, hardware_node: str) -> str | None:
        """Why a run asking for `hardware_node` cannot execute on this node; None if it can."""
        target = NodeTarget.parse(hardware_node)
        if target.node_class is not None and target.node_class != self.node_class:
            return f"class {target.node_class} is not this node's class {self.node_class}"
        if target.site not in (None, LOCAL_SITE, self.site):
            return f"site {target.site} is not this node's site {self.site}"
        return None


def detected_class(device: str) -> str:
    """`cpu`, or the CUDA device's name (`nvidia-h100-80gb-hbm3`) when running on a GPU."""
    if device == "cpu":
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return slug(torch.cuda.get_device_name(0))
    except ImportError:  # pragma: no cover - torch is a dependency of the real executors
        pass
    return slug(device)


def local_node(device: str) -> LocalNode:
    """This process's node: configured, else detected (`device`: the executors' device)."""
    node_class = os.environ.get(ENV_NODE_CLASS) or detected_class(device)
    site = os.environ.get(ENV_NODE_SITE) or slug(socket.gethostname())
    return LocalNode(slug(node_class), slug(site))
