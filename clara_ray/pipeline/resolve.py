"""Turn a validated pipeline plus a job's parameter overrides into a run plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clara_ray.errors import PipelineValidationError
from clara_ray.pipeline.placeholders import substitute
from clara_ray.pipeline.spec import InputSpec, OperatorSpec, PipelineSpec, ServiceSpec

__all__ = ["ResolvedOperator", "ResolvedPipeline", "coerce_parameter", "resolve_pipeline"]


@dataclass(frozen=True)
class ResolvedOperator:
    spec: OperatorSpec
    args: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def inputs(self) -> list[InputSpec]:
        return self.spec.input

    @property
    def upstream(self) -> list[str]:
        return sorted({i.from_ for i in self.spec.input if i.from_})


@dataclass(frozen=True)
class ResolvedPipeline:
    """Operators in an order where every operator comes after its upstreams."""

    spec: PipelineSpec
    parameters: dict[str, Any]
    operators: tuple[ResolvedOperator, ...]
    services: tuple[ServiceSpec, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def operator(self, name: str) -> ResolvedOperator:
        for op in self.operators:
            if op.name == name:
                return op
        raise KeyError(name)


def coerce_parameter(name: str, default: Any, value: Any) -> Any:
    """An override (often a CLI string) in the type of the parameter's default."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            lowered = value.strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise PipelineValidationError(
            [
                f"parameter '{name}': value {value!r} is not a {type(default).__name__} "
                f"like its default {default!r}"
            ]
        ) from None
    return value


def resolve_pipeline(
    spec: PipelineSpec, overrides: Mapping[str, Any] | None = None
) -> ResolvedPipeline:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(spec.parameters))
    if unknown:
        known = ", ".join(spec.parameters) or "none"
        raise PipelineValidationError(
            [
                f"pipeline '{spec.name}': unknown parameter '{n}' (parameters: {known})"
                for n in unknown
            ]
        )
    params = {
        name: coerce_parameter(name, default, overrides[name]) if name in overrides else default
        for name, default in spec.parameters.items()
    }
    by_name = {op.name: op for op in spec.operators}
    ordered: list[ResolvedOperator] = []
    done: set[str] = set()

    def place(op: OperatorSpec) -> None:
        if op.name in done:
            return
        done.add(op.name)
        for inp in op.input:
            if inp.from_:
                place(by_name[inp.from_])
        ordered.append(ResolvedOperator(op, substitute(op.args, params)))

    for op in spec.operators:
        place(op)
    services = tuple(
        ServiceSpec.model_validate(substitute(s.model_dump(), params)) for s in spec.services
    )
    return ResolvedPipeline(spec, params, tuple(ordered), services)
