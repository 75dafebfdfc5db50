"""The pipeline definition as typed data.

The keys are those of Clara Deploy's pipeline definition language that make
sense without containers (``api-version``, ``name``, ``parameters``,
``operators[]`` with ``input``/``output``/``requests``/``timeout``/``args``),
plus ``run``: the import path of the operator function.  An input may carry
``as`` to bind an upstream output to a differently named argument.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "NAME_PATTERN",
    "SUPPORTED_API_VERSIONS",
    "InputSpec",
    "OperatorSpec",
    "OutputSpec",
    "PipelineSpec",
    "Requests",
    "ServiceSpec",
    "parse_memory",
]

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-_]{0,62}[a-z0-9])?$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RUN_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SUPPORTED_API_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "1.0")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|KB|MB|GB|TB)?\s*$")
_UNITS = {
    None: 2**20,  # a bare number is MiB, as Clara's `requests.memory` was
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}


def check_name(value: str) -> str:
    """A pipeline, operator or service name: lowercase letters, digits, '-' or '_'."""
    if not NAME_PATTERN.match(value):
        raise ValueError(f"must be lowercase letters, digits, '-' or '_' (max 64), got {value!r}")
    return value


def parse_memory(value: int | float | str) -> int:
    """Bytes from Clara's memory request: a number of MiB or a string like ``'2Gi'``."""
    if isinstance(value, bool):
        raise ValueError(f"memory must be MiB or a size like '2Gi', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"memory must not be negative, got {value}")
        return int(value * 2**20)
    match = _MEMORY.match(value)
    if not match:
        raise ValueError(f"memory must be MiB or a size like '512Mi' or '2Gi', got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class InputSpec(_Strict):
    """One named input. Without ``from`` it is the job's payload."""

    from_: str | None = Field(None, alias="from", description="Upstream operator name.")
    name: str = Field(description="Output name of the upstream operator, or the payload's name.")
    as_: str | None = Field(None, alias="as", description="Argument name, when not `name`.")
    path: str | None = Field(None, description="Clara's container mount path; accepted, unused.")

    @property
    def argument(self) -> str:
        return self.as_ or self.name

    @field_validator("name", "as_")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        if v is not None and not IDENTIFIER.match(v):
            raise ValueError(f"must be a Python identifier, got {v!r}")
        return v


class OutputSpec(_Strict):
    name: str = Field(description="Output name, a Python identifier.")
    description: str | None = None
    path: str | None = Field(None, description="Clara's container mount path; accepted, unused.")

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError(f"must be a Python identifier, got {v!r}")
        return v


class Requests(_Strict):
    cpu: float = Field(1.0, ge=0, description="CPUs for the operator's Ray task.")
    gpu: float = Field(0.0, ge=0, description="GPUs (fractional allowed below 1).")
    memory: int | float | str | None = Field(None, description="MiB, or a size like '2Gi'.")

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"a GPU request above 1 must be a whole number, got {v}")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | float | str | None) -> int | float | str | None:
        if v is not None:
            parse_memory(v)
        return v

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)


class ServiceSpec(_Strict):
    """An inference service operators reach through ``ctx.services[name]``.

    ``kind: serve`` calls the Ray Serve deployment of ``model`` through a
    DeploymentHandle (no HTTP hop inside the cluster); ``kind: triton`` calls a
    Triton Inference Server at ``url`` with tritonclient.
    """

    name: str = Field(description="Name operators use, e.g. liver-seg.")
    kind: Literal["serve", "triton"] = Field(description="Ray Serve deployment or Triton server.")
    model: str = Field(description="Model name in the model repository / on the server.")
    version: str | None = Field(None, description="Model version; default: the model's default.")
    url: str | None = Field(None, description="Triton URL (host:port, http or grpc), kind triton.")
    protocol: Literal["http", "grpc"] = Field("http", description="Triton protocol, kind triton.")
    app: str = Field(
        "clara-inference",
        description="Serve inference application, kind serve; the model is served by its "
        "application <app>-<model>.",
    )

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @model_validator(mode="after")
    def _url(self) -> ServiceSpec:
        if self.kind == "triton" and not self.url:
            raise ValueError("a triton service needs url (host:port of the Triton server)")
        return self


class OperatorSpec(_Strict):
    name: str = Field(description="Unique operator name (lowercase, digits, '-', '_').")
    description: str | None = None
    run: str = Field(description="Import path of the operator function, 'package.module:function'.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")
    input: list[InputSpec] = Field(default_factory=list)
    output: list[OutputSpec] = Field(default_factory=list)
    requests: Requests = Field(default_factory=Requests)
    timeout: float | None = Field(None, gt=0, description="Seconds before the operator is stopped.")
    retries: int = Field(0, ge=0, le=10, description="Re-runs after a worker crash.")

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @field_validator("run")
    @classmethod
    def _run(cls, v: str) -> str:
        if not RUN_PATTERN.match(v):
            raise ValueError(f"must be 'package.module:function', got {v!r}")
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not IDENTIFIER.match(str(k))]
        if bad:
            raise ValueError(f"argument names must be Python identifiers, got {bad}")
        return v


class PipelineSpec(_Strict):
    api_version: str = Field(alias="api-version", description="Pipeline definition version.")
    name: str = Field(description="Pipeline name (lowercase, digits, '-', '_').")
    description: str | None = None
    parameters: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    timeout: float | None = Field(
        None, gt=0, description="Seconds before the whole job is stopped."
    )
    services: list[ServiceSpec] = Field(default_factory=list, description="Inference services.")
    eviction: Literal["requeue", "stop"] = Field(
        "requeue",
        description="When a job of higher priority evicts one of this pipeline's jobs: requeue "
        "it to run again when resources free, or stop it (Evicted).",
    )
    scheduling: Literal["pack", "spread"] = Field(
        "pack",
        description="Where a job's operators run: pack (Ray's default placement) or spread "
        "across the nodes.",
    )
    operators: list[OperatorSpec] = Field(min_length=1)

    @field_validator("api_version", mode="before")
    @classmethod
    def _api_version(cls, v: Any) -> str:
        text = str(v)
        if text not in SUPPORTED_API_VERSIONS:
            raise ValueError(
                f"unsupported api-version {text!r}, expected one of {SUPPORTED_API_VERSIONS}"
            )
        return text

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not IDENTIFIER.match(str(k))]
        if bad:
            raise ValueError(f"parameter names must be identifiers, got {bad}")
        return v

    def operator(self, name: str) -> OperatorSpec:
        for op in self.operators:
            if op.name == name:
                return op
        raise KeyError(name)
