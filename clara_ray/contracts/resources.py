"""Amounts of CPU, GPU and memory, and what a cluster holds of them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["DIMENSIONS", "ClusterCapacity", "Resources"]

DIMENSIONS = ("cpu", "gpu", "memory")
_EPSILON = 1e-9


def _amount(name: str, value: float) -> str:
    if name == "memory":
        return f"{value / 2**30:.1f} GiB"
    return f"{value:g}"


@dataclass(frozen=True)
class Resources:
    """CPUs, GPUs and memory bytes, as Ray schedules them."""

    cpu: float = 0.0
    gpu: float = 0.0
    memory: float = 0.0

    @classmethod
    def of(cls, values: Mapping[str, Any] | None) -> Resources:
        values = values or {}
        return cls(**{d: float(values.get(d) or 0.0) for d in DIMENSIONS})

    @classmethod
    def total(cls, items: Iterable[Resources]) -> Resources:
        out = cls()
        for item in items:
            out = out + item
        return out

    def to_dict(self) -> dict[str, float]:
        return {d: getattr(self, d) for d in DIMENSIONS}

    def __add__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def fits_in(self, room: Resources) -> bool:
        return not self.short_of(room)

    def short_of(self, room: Resources) -> tuple[str, ...]:
        """The dimensions in which this amount exceeds ``room``."""
        return tuple(d for d in DIMENSIONS if getattr(self, d) > getattr(room, d) + _EPSILON)

    def uses(self, dimension: str) -> bool:
        return getattr(self, dimension) > _EPSILON

    def without_gpu(self) -> Resources:
        return Resources(self.cpu, 0.0, self.memory)

    def describe(self, dimensions: Iterable[str] = DIMENSIONS) -> str:
        """``cpu: 2, gpu: 1`` (the named dimensions, zero ones left out unless all are)."""
        shown = [d for d in dimensions if self.uses(d)] or list(dimensions)[:1]
        return ", ".join(f"{d}: {_amount(d, getattr(self, d))}" for d in shown)


@dataclass(frozen=True)
class ClusterCapacity:
    """What the cluster can hold: ``total`` over its nodes, and each node's own amounts.

    ``nodes`` is empty when the shape of the nodes is not known (a configured capacity for
    a cluster that autoscales); then no per-node check is made.
    """

    total: Resources
    nodes: tuple[Resources, ...] = field(default_factory=tuple)
