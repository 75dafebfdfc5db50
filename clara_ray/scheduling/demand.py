"""A job's demand: per resource, the most its operators can hold at the same time.

The runner submits every operator at once and Ray starts each as soon as its
inputs exist, so any set of operators none of which depends on another (an
antichain of the pipeline's DAG) may run together.  The demand in one
resource is the heaviest such set, weighted by that resource's requests.  By
the weighted form of Dilworth's theorem that is the total weight minus a
maximum flow in the bipartite graph of the DAG's reachability (``u`` left to
``v`` right whenever ``v`` depends on ``u``, source to each left ``u`` and each
right ``u`` to the sink with capacity ``weight(u)``): exact, and polynomial
where enumerating the antichains is not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from clara_ray.contracts.resources import DIMENSIONS, Resources
from clara_ray.pipeline import ResolvedPipeline

__all__ = ["OperatorDemand", "peak_demand", "pipeline_demand"]


@dataclass(frozen=True)
class OperatorDemand:
    name: str
    upstream: tuple[str, ...]
    request: Resources


def peak_demand(operators: Sequence[OperatorDemand]) -> Resources:
    """Per resource, the largest sum of requests over operators that may run at once."""
    names = [op.name for op in operators]
    index = {name: i for i, name in enumerate(names)}
    below = _reachability([[index[u] for u in op.upstream] for op in operators])
    peaks = {
        d: _heaviest_antichain([getattr(op.request, d) for op in operators], below)
        for d in DIMENSIONS
    }
    return Resources(**peaks)


def _reachability(upstream: list[list[int]]) -> list[set[int]]:
    """For each operator, every operator it depends on, directly or not."""
    memo: list[set[int] | None] = [None] * len(upstream)

    def ancestors(i: int) -> set[int]:
        known = memo[i]
        if known is None:
            known = set()
            for u in upstream[i]:
                known |= {u} | ancestors(u)
            memo[i] = known
        return known

    return [ancestors(i) for i in range(len(upstream))]


def _heaviest_antichain(weights: list[float], below: list[set[int]]) -> float:
    n = len(weights)
    total = sum(weights)
    if total <= 0:
        return 0.0
    source, sink = 2 * n, 2 * n + 1
    capacity: dict[int, dict[int, float]] = {node: {} for node in range(2 * n + 2)}

    def edge(a: int, b: int, cap: float) -> None:
        capacity[a][b] = capacity[a].get(b, 0.0) + cap
        capacity[b].setdefault(a, 0.0)

    for v in range(n):
        if weights[v] > 0:
            edge(source, v, weights[v])
            edge(n + v, sink, weights[v])
        for u in below[v]:
            edge(u, n + v, float("inf"))
    return max(0.0, total - _max_flow(capacity, source, sink))


def _max_flow(capacity: dict[int, dict[int, float]], source: int, sink: int) -> float:
    """Edmonds-Karp on the residual capacities (changed in place)."""
    flow = 0.0
    while True:
        parent = {source: source}
        frontier = deque([source])
        while frontier and sink not in parent:
            a = frontier.popleft()
            for b, cap in capacity[a].items():
                if cap > 1e-12 and b not in parent:
                    parent[b] = a
                    frontier.append(b)
        if sink not in parent:
            return flow
        path, node = [], sink
        while node != source:
            path.append((parent[node], node))
            node = parent[node]
        pushed = min(capacity[a][b] for a, b in path)
        for a, b in path:
            capacity[a][b] -= pushed
            capacity[b][a] += pushed
        flow += pushed


def pipeline_demand(plan: ResolvedPipeline) -> tuple[Resources, dict[str, Resources]]:
    """A resolved pipeline's demand, and each operator's request."""
    requests = {
        op.name: Resources(
            cpu=op.spec.requests.cpu,
            gpu=op.spec.requests.gpu,
            memory=float(op.spec.requests.memory_bytes or 0),
        )
        for op in plan.operators
    }
    peak = peak_demand(
        [OperatorDemand(op.name, tuple(op.upstream), requests[op.name]) for op in plan.operators]
    )
    return peak, requests
