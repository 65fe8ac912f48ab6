"""hardwareNode -> Ray labels and resources, and the reasons a run cannot be placed."""

from __future__ import annotations

import pytest

from foundry.adapters.fleet.placement import (
    ClusterNode,
    NodeTarget,
    Placement,
    place,
    worker_labels,
    worker_resources,
)
from foundry.domain import commands as c


def node(node_class: str, site: str, *, gpus: int = 0, vram: float | None = None,
         alive: bool = True) -> ClusterNode:
    resources = worker_resources(gpus, vram)
    if gpus:
        resources["GPU"] = float(gpus)
    return ClusterNode(f"{node_class}-{site}", alive, worker_labels(node_class, site),
                       resources)


HEAD = ClusterNode("head", True, {"ray.io/node-id": "head"}, {"memory": 1.0})


@pytest.mark.parametrize(("hardware_node", "selector"), [
    ("rtx-5090@lab-2", {"foundry.class": "rtx-5090", "foundry.site": "lab-2"}),
    ("h100@any", {"foundry.class": "h100"}),
    ("any", {}),
])
def test_the_grammar_maps_to_label_selectors(hardware_node, selector):
    assert NodeTarget.parse(hardware_node).label_selector() == selector
    assert str(NodeTarget.parse(hardware_node)) == hardware_node


@pytest.mark.parametrize("bad", ["gpu", "rtx-@lab", "Rtx@lab", "a@-b", "x" * 64 + "@l", "@lab"])
def test_names_that_are_no_ray_label_value_are_refused(bad):
    import re

    assert not re.match(c.HARDWARE_NODE, bad)  # forge/run refuses them up front
    with pytest.raises(ValueError, match=r"expected|use 1-63"):
        NodeTarget.parse(bad)


def test_a_cpu_run_takes_one_slot_on_a_matching_node_only():
    nodes = [HEAD, node("cpu", "desk"), node("rtx-5090", "lab-2", gpus=2)]
    assert place("cpu@desk", None, nodes) == Placement(
        {"foundry.class": "cpu", "foundry.site": "desk"}, {"foundry.slot": 1.0}, 0.0)


def test_a_run_on_gpu_nodes_takes_one_gpu_and_one_slot():
    nodes = [node("rtx-5090", "lab-2", gpus=2, vram=32)]
    placed = place("rtx-5090@any", None, nodes)
    assert isinstance(placed, Placement)
    assert placed.num_gpus == 1.0 and placed.resources == {"foundry.slot": 1.0}
    assert placed.as_event_resources() == {"foundry.slot": 1.0, "GPU": 1.0}


def test_min_vram_is_checked_per_gpu_and_requested():
    nodes = [node("rtx-5090", "lab-2", gpus=2, vram=32), node("h100", "lab-1", gpus=1, vram=80)]
    placed = place("any", 40, nodes)
    assert isinstance(placed, Placement) and placed.resources["vram-gb"] == 40.0
    reason = place("rtx-5090@any", 40, nodes)
    assert reason == ("hardware.minVramGb is 40 but the workers that offer rtx-5090@any have "
                      "at most 32 GB per GPU (foundry worker --vram-gb)")


def test_no_matching_live_worker_gives_a_reason_naming_what_is_there():
    nodes = [HEAD, node("cpu", "desk"), node("h100", "lab-1", alive=False)]
    reason = place("h100@lab-1", None, nodes)
    assert isinstance(reason, str)
    assert reason.startswith("no live worker offers h100@lab-1")
    assert "live workers: cpu@desk (1 slot(s))" in reason
    assert "foundry worker --class h100 --site lab-1" in reason
    assert "live workers: none" in str(place("any", None, [HEAD]))


def test_worker_resources_offer_one_slot_per_gpu_and_vram_per_slot():
    assert worker_resources(0, None) == {"foundry.slot": 1.0}
    assert worker_resources(4, 24) == {"foundry.slot": 4.0, "vram-gb": 96.0}
    assert node("a", "b", gpus=4, vram=24).vram_per_slot == 24.0
    with pytest.raises(ValueError, match="must be positive"):
        worker_resources(1, 0)
    with pytest.raises(ValueError, match="use 1-63"):
        worker_labels("RTX 5090", "lab")
