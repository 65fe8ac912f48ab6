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

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from foundry.adapters.settings import ENV_NODE_CLASS, ENV_NODE_SITE

__all__ = ["ENV_NODE_CLASS", "ENV_NODE_SITE", "LOCAL_SITE", "LocalNode", "detected_class",
           "local_node", "slug"]
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
        # The grammar is fleet/placement.NodeTarget's (forge/run's params model checks it);
        # parsed here again so that runs/ does not import the fleet (the fleet imports it).
        if hardware_node == "any":
            return None
        node_class, _, site = hardware_node.partition("@")
        if node_class != self.node_class:
            return f"class {node_class} is not this node's class {self.node_class}"
        if site not in ("any", LOCAL_SITE, self.site):
            return f"site {site} is not this node's site {self.site}"
        return None


def detected_class(device: str) -> str:
    """`cpu`, or the GPU's model name (`nvidia-h100-80gb-hbm3`) when the executors run on
    one, read from the NVIDIA driver's /proc entry (torch stays inside the executors)."""
    if device == "cpu":
        return "cpu"
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model" and value.strip():
                return slug(value.strip())
    return slug(device)


def local_node(device: str, node_class: str | None = None, site: str | None = None
               ) -> LocalNode:
    """This process's node: as configured (Settings.node_class, Settings.node_site), else
    detected (`device`: the executors' device)."""
    node_class = node_class or detected_class(device)
    site = site or slug(socket.gethostname())
    return LocalNode(slug(node_class), slug(site))
