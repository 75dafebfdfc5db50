"""Reading the cluster's capacity from Ray's node list (plain: nodes given as Ray gives them)."""

from __future__ import annotations

from clara_ray.config.settings import CapacitySettings
from clara_ray.contracts.resources import ClusterCapacity, Resources
from clara_ray.runner.cluster import cluster_capacity, runnable_somewhere

HEAD = {"CPU": 0.0, "memory": 8 * 2**30, "clara_head": 1.0, "node:__internal_head__": 1.0}
GPU_NODE = {"CPU": 8.0, "GPU": 2.0, "memory": 32 * 2**30}
CPU_NODE = {"CPU": 4.0, "memory": 16 * 2**30}


def test_capacity_is_the_nodes_total_with_their_shapes() -> None:
    capacity = cluster_capacity([HEAD, GPU_NODE, CPU_NODE], CapacitySettings())
    assert capacity.total == Resources(cpu=12, gpu=2, memory=56 * 2**30)
    assert capacity.nodes == (
        Resources(0, 0, 8 * 2**30),
        Resources(8, 2, 32 * 2**30),
        Resources(4, 0, 16 * 2**30),
    )


def test_configured_capacity_overrides_what_it_names_and_drops_node_shapes() -> None:
    capacity = cluster_capacity([HEAD, CPU_NODE], CapacitySettings(gpu=8, memory="1Ti"))
    assert capacity == ClusterCapacity(Resources(cpu=4, gpu=8, memory=2**40), ())


def test_an_operator_is_runnable_where_some_node_has_all_it_asks() -> None:
    nodes = [HEAD, GPU_NODE, CPU_NODE]
    assert runnable_somewhere({"CPU": 1.0, "GPU": 1.0}, nodes)
    assert runnable_somewhere({"CPU": 8.0, "GPU": 2.0, "memory": 2**30}, nodes)
    assert not runnable_somewhere({"CPU": 1.0, "GPU": 3.0}, nodes)
    assert not runnable_somewhere({"CPU": 5.0}, [HEAD, CPU_NODE])
    assert not runnable_somewhere({"GPU": 1.0}, [HEAD, CPU_NODE])  # the GPU node was lost
