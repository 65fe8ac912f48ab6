"""Where a run may execute: `hardwareNode` mapped onto Ray node labels and resources.

`hardwareNode` is `<class>@<site>` (`rtx-5090@lab-2`), `<class>@any` or `any`. Ray labels
cannot hold `@`, so a worker node carries two labels, `foundry.class` and `foundry.site`,
set by `foundry worker --class rtx-5090 --site lab-2`, and a run selects on them.

Capacity: one run per GPU. A worker offers `foundry.slot` = its GPU count (1 on a CPU-only
node) and every run takes one slot, plus one GPU when the nodes that match it have GPUs (so
Ray sets CUDA_VISIBLE_DEVICES for it). `foundry worker --vram-gb N` (the memory of each
GPU) adds a `vram-gb` resource of N per slot; a recipe's `hardware.minVramGb` is requested
from it and checked against the per-GPU figure before anything is submitted.

No Ray import here: the rules are plain functions over `ray.nodes()`-shaped dicts, so they
are tested without a cluster and shared by the dispatcher, the worker wrapper and the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CLASS_LABEL = "foundry.class"
SITE_LABEL = "foundry.site"
SLOT_RESOURCE = "foundry.slot"
VRAM_RESOURCE = "vram-gb"

# Ray label values follow Kubernetes: at most 63 characters, alphanumeric at both ends.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def check_label_value(what: str, value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value) or value.lower() != value:
        msg = (f"{what} {value!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
               "starting and ending with a letter or digit")
        raise ValueError(msg)
    return value


@dataclass(frozen=True)
class NodeTarget:
    """A parsed hardwareNode; None means any."""

    node_class: str | None
    site: str | None

    @classmethod
    def parse(cls, hardware_node: str) -> NodeTarget:
        if hardware_node == "any":
            return cls(None, None)
        node_class, sep, site = hardware_node.partition("@")
        if not sep:
            msg = f"hardwareNode {hardware_node!r}: expected <class>@<site>, <class>@any or any"
            raise ValueError(msg)
        check_label_value("node class", node_class)
        if site != "any":
            check_label_value("site", site)
        return cls(node_class, None if site == "any" else site)

    def label_selector(self) -> dict[str, str]:
        selector = {}
        if self.node_class is not None:
            selector[CLASS_LABEL] = self.node_class
        if self.site is not None:
            selector[SITE_LABEL] = self.site
        return selector

    def __str__(self) -> str:
        if self.node_class is None:
            return "any"
        return f"{self.node_class}@{self.site or 'any'}"


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    alive: bool
    labels: Mapping[str, str]
    resources: Mapping[str, float]

    @classmethod
    def from_ray(cls, info: Mapping[str, Any]) -> ClusterNode:
        """From one entry of `ray.nodes()`."""
        return cls(node_id=str(info.get("NodeID", "")), alive=bool(info.get("Alive")),
                   labels=dict(info.get("Labels") or {}),
                   resources=dict(info.get("Resources") or {}))

    @property
    def is_worker(self) -> bool:
        return self.resources.get(SLOT_RESOURCE, 0) > 0

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0))

    @property
    def vram_per_slot(self) -> float | None:
        vram = self.resources.get(VRAM_RESOURCE)
        slots = self.resources.get(SLOT_RESOURCE, 1) or 1
        return None if vram is None else float(vram) / float(slots)

    def matches(self, target: NodeTarget) -> bool:
        return all(self.labels.get(k) == v for k, v in target.label_selector().items())

    def describe(self) -> str:
        return (f"{self.labels.get(CLASS_LABEL, '?')}@{self.labels.get(SITE_LABEL, '?')}"
                f" ({self.resources.get(SLOT_RESOURCE, 0):g} slot(s))")


@dataclass(frozen=True)
class Placement:
    """What a run asks Ray for."""

    label_selector: dict[str, str]
    resources: dict[str, float] = field(default_factory=dict)
    num_gpus: float = 0.0

    def as_event_resources(self) -> dict[str, float]:
        return {**self.resources, **({"GPU": self.num_gpus} if self.num_gpus else {})}


def place(hardware_node: str, min_vram_gb: float | None,
          nodes: Iterable[ClusterNode]) -> Placement | str:
    """The placement of a run, or the reason no live worker can take it (a sentence that
    `forge/status` shows while the run waits)."""
    target = NodeTarget.parse(hardware_node)
    workers = [n for n in nodes if n.alive and n.is_worker]
    matching = [n for n in workers if n.matches(target)]
    if not matching:
        offered = ", ".join(sorted({n.describe() for n in workers})) or "none"
        hint = (f"start one with: foundry worker --class {target.node_class} --site "
                f"{target.site or '<site>'}" if target.node_class else "start a foundry worker")
        return (f"no live worker offers {target} (labels {target.label_selector() or 'any'});"
                f" live workers: {offered}; {hint}")
    resources: dict[str, float] = {SLOT_RESOURCE: 1.0}
    if min_vram_gb:
        roomy = [n for n in matching
                 if n.vram_per_slot is not None and n.vram_per_slot >= min_vram_gb]
        if not roomy:
            best = max((n.vram_per_slot or 0.0 for n in matching), default=0.0)
            return (f"hardware.minVramGb is {min_vram_gb:g} but the workers that offer "
                    f"{target} have at most {best:g} GB per GPU (foundry worker --vram-gb)")
        matching = roomy
        resources[VRAM_RESOURCE] = float(min_vram_gb)
    num_gpus = 1.0 if any(n.gpus > 0 for n in matching) else 0.0
    return Placement(target.label_selector(), resources, num_gpus)


def worker_labels(node_class: str, site: str) -> dict[str, str]:
    return {CLASS_LABEL: check_label_value("node class", node_class),
            SITE_LABEL: check_label_value("site", site)}


def worker_resources(num_gpus: int, vram_gb: float | None) -> dict[str, float]:
    """The custom resources a worker node offers: one slot per GPU (one on a CPU-only node)
    and, when given, `vram_gb` per slot."""
    if num_gpus < 0:
        msg = f"num_gpus {num_gpus}: must be 0 or more"
        raise ValueError(msg)
    slots = max(1, num_gpus)
    resources = {SLOT_RESOURCE: float(slots)}
    if vram_gb is not None:
        if vram_gb <= 0:
            msg = f"vram-gb {vram_gb:g}: must be positive"
            raise ValueError(msg)
        resources[VRAM_RESOURCE] = float(vram_gb) * slots
    return resources
