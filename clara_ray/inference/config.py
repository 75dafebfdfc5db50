"""A model's configuration: Triton's ``config.pbtxt`` and the fields clara-ray uses.

The text is parsed by protobuf into Triton's own ``ModelConfig`` message
(:mod:`tritonclient.grpc.model_config_pb2`), so syntax, field names, enums
and oneofs follow Triton exactly.  :class:`ModelConfig` keeps

- ``name``, ``platform`` / ``backend``, ``max_batch_size``,
  ``default_model_filename``;
- ``input`` / ``output``: ``name``, ``data_type`` (``TYPE_FP32``...),
  ``dims``, optional ``reshape { shape: [..] }`` and ``optional``;
- ``instance_group``: ``count``, ``kind``, ``gpus``; the replicas of a
  Serve deployment;
- ``dynamic_batching``: ``max_queue_delay_microseconds``,
  ``preferred_batch_size``;
- ``version_policy``: ``latest { num_versions }``, ``all {}`` or
  ``specific { versions }``;
- ``parameters { key: ".." value { string_value: ".." } }``, including the
  clara-ray extensions ``clara_gpu`` (GPUs per replica, fractional allowed,
  e.g. ``"0.5"``) and ``clara_cpu`` (CPUs per replica).

Other Triton fields are accepted and ignored.  Errors name the file and the
line or the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from clara_ray.inference.errors import ModelRepositoryError

__all__ = [
    "DEFAULT_MODEL_FILENAMES",
    "TYPE_TO_DATATYPE",
    "DynamicBatching",
    "InstanceGroup",
    "ModelConfig",
    "TensorConfig",
    "VersionPolicy",
]

TYPE_TO_DATATYPE: Mapping[str, str] = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}
"""Triton config ``data_type`` names and the KServe datatype of each (TYPE_BF16 is not supported)."""

DEFAULT_MODEL_FILENAMES: Mapping[str, str] = {
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "tensorflow_savedmodel": "model.savedmodel",
    "python": "model.py",
}
"""Triton's default model file name per platform or backend."""

GPU_PARAMETER = "clara_gpu"
CPU_PARAMETER = "clara_cpu"


@dataclass(frozen=True)
class TensorConfig:
    """One input or output: KServe ``datatype`` and ``dims`` without the batch dimension."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False

    def shape(self, max_batch_size: int) -> list[int]:
        """The shape clients see: ``[-1, *dims]`` when the model batches."""
        return [-1, *self.dims] if max_batch_size > 0 else list(self.dims)


@dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_AUTO"
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_microseconds: int = 0
    preferred_batch_size: tuple[int, ...] = ()


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions a model serves (Triton's default: the latest one)."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "latest":
            return ordered[-self.num_versions :]
        return [v for v in ordered if v in self.versions]


def _protobuf(text: str, source: str) -> Any:
    message = pb.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        problem = re.sub(r"^\d+:\d+ : ", "", str(exc))
        if enum := re.search(r'Enum type "([\w.]+)" has no value named', problem):
            values = pb.DESCRIPTOR.pool.FindEnumTypeByName(enum.group(1)).values_by_name
            problem += f" Expected one of {', '.join(values)}."
        raise ModelRepositoryError(
            f"{source}:{exc.GetLine()}:{exc.GetColumn()}: {problem}"
        ) from None
    return message


def _tensor(t: Any, key: str, label: str, source: str) -> TensorConfig:
    def error(name: str, problem: str) -> ModelRepositoryError:
        return ModelRepositoryError(f"{source}: {key}.{name}: {problem}")

    if not t.name:
        raise error("name", "missing")
    data_type = pb.DataType.Name(t.data_type)
    if data_type == "TYPE_INVALID":
        raise error("data_type", f"missing for {label} {t.name!r}")
    if data_type not in TYPE_TO_DATATYPE:
        raise error(
            "data_type",
            f"unknown data_type {data_type!r} for {label} {t.name!r}; "
            f"expected one of {', '.join(TYPE_TO_DATATYPE)}",
        )
    for d in t.dims:
        if d < 1 and d != -1:
            raise error(
                "dims", f"dimension {d} of {label} {t.name!r}: expected a positive integer or -1"
            )
    return TensorConfig(
        name=t.name,
        datatype=TYPE_TO_DATATYPE[data_type],
        dims=tuple(t.dims),
        reshape=tuple(t.reshape.shape) if t.HasField("reshape") else None,
        optional=label == "input" and t.optional,
    )


def _tensors(items: Any, label: str, source: str) -> tuple[TensorConfig, ...]:
    tensors = tuple(_tensor(t, f"{label}[{i}]", label, source) for i, t in enumerate(items))
    if not tensors:
        raise ModelRepositoryError(f"{source}: {label}: the model declares no {label}s")
    names = [t.name for t in tensors]
    for n in names:
        if names.count(n) > 1:
            raise ModelRepositoryError(f"{source}: {label}: {label} name {n!r} is declared twice")
    return tensors


def _instance_groups(config: Any, source: str) -> tuple[InstanceGroup, ...]:
    groups = []
    for i, g in enumerate(config.instance_group):
        if g.count < 0:
            raise ModelRepositoryError(
                f"{source}: instance_group[{i}].count: must be a positive integer, got {g.count}"
            )
        kind = pb.ModelInstanceGroup.Kind.Name(g.kind)
        groups.append(InstanceGroup(count=g.count or 1, kind=kind, gpus=tuple(g.gpus)))
    return tuple(groups)


def _dynamic_batching(config: Any, source: str) -> DynamicBatching | None:
    if not config.HasField("dynamic_batching"):
        return None
    b = config.dynamic_batching
    if config.max_batch_size == 0:
        raise ModelRepositoryError(
            f"{source}: dynamic_batching: dynamic_batching needs max_batch_size > 0"
        )
    for p in b.preferred_batch_size:
        if not 1 <= p <= config.max_batch_size:
            raise ModelRepositoryError(
                f"{source}: dynamic_batching.preferred_batch_size: "
                f"{p} is outside 1..max_batch_size ({config.max_batch_size})"
            )
    return DynamicBatching(b.max_queue_delay_microseconds, tuple(b.preferred_batch_size))


def _version_policy(config: Any, source: str) -> VersionPolicy:
    if not config.HasField("version_policy"):
        return VersionPolicy()
    vp = config.version_policy
    chosen = vp.WhichOneof("policy_choice")
    if chosen is None:
        raise ModelRepositoryError(
            f"{source}: version_policy: expected exactly one of latest, all, specific; got none"
        )
    if chosen == "latest":
        n = vp.latest.num_versions
        if n < 1:
            raise ModelRepositoryError(
                f"{source}: version_policy.latest.num_versions: must be a positive integer, got {n}"
            )
        return VersionPolicy("latest", num_versions=n)
    if chosen == "all":
        return VersionPolicy("all")
    versions = tuple(vp.specific.versions)
    if not versions:
        raise ModelRepositoryError(
            f"{source}: version_policy.specific.versions: specific needs at least one version"
        )
    return VersionPolicy("specific", versions=versions)


@dataclass(frozen=True)
class ModelConfig:
    """A model's configuration (the fields of Triton's ``config.pbtxt`` that clara-ray uses)."""

    name: str
    platform: str = ""
    backend: str = ""
    max_batch_size: int = 0
    inputs: tuple[TensorConfig, ...] = ()
    outputs: tuple[TensorConfig, ...] = ()
    instance_groups: tuple[InstanceGroup, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    parameters: Mapping[str, str] = field(default_factory=dict)
    default_model_filename: str = ""

    @classmethod
    def parse(cls, text: str, source: str = "<config>") -> ModelConfig:
        """Parse ``config.pbtxt`` text; ``source`` names the file in errors."""
        message = _protobuf(text, source)
        if message.max_batch_size < 0:
            raise ModelRepositoryError(
                f"{source}: max_batch_size: must be 0 (no batching) or positive, "
                f"got {message.max_batch_size}"
            )
        config = cls(
            name=message.name,
            platform=message.platform,
            backend=message.backend,
            max_batch_size=message.max_batch_size,
            inputs=_tensors(message.input, "input", source),
            outputs=_tensors(message.output, "output", source),
            instance_groups=_instance_groups(message, source),
            dynamic_batching=_dynamic_batching(message, source),
            version_policy=_version_policy(message, source),
            parameters={k: v.string_value for k, v in message.parameters.items()},
            default_model_filename=message.default_model_filename,
        )
        config._check_resources(source)
        return config

    def _check_resources(self, source: str) -> None:
        for key in (GPU_PARAMETER, CPU_PARAMETER):
            if key in self.parameters:
                try:
                    value = float(self.parameters[key])
                except ValueError:
                    value = -1.0
                if value < 0:
                    raise ModelRepositoryError(
                        f"{source}: parameters[{key}]: expected a non-negative number, "
                        f"got {self.parameters[key]!r}"
                    )
        gpu = self.num_gpus
        if gpu > 1 and gpu != int(gpu):
            raise ModelRepositoryError(
                f"{source}: parameters[{GPU_PARAMETER}]: a GPU request above 1 must be whole, got {gpu}"
            )
        kinds = {g.kind for g in self.instance_groups}
        if GPU_PARAMETER in self.parameters and gpu > 0 and kinds == {"KIND_CPU"}:
            raise ModelRepositoryError(
                f"{source}: parameters[{GPU_PARAMETER}] asks for {gpu} GPU but every "
                "instance_group has kind KIND_CPU"
            )

    # -- derived -------------------------------------------------------------

    @property
    def platform_or_backend(self) -> str:
        return self.platform or self.backend

    @property
    def model_filename(self) -> str:
        """The model file inside each version folder."""
        if self.default_model_filename:
            return self.default_model_filename
        return DEFAULT_MODEL_FILENAMES.get(self.platform_or_backend, "model.pt")

    @property
    def num_gpus(self) -> float:
        """GPUs per replica: ``clara_gpu``, else 1 when an instance group is KIND_GPU, else 0."""
        if GPU_PARAMETER in self.parameters:
            return float(self.parameters[GPU_PARAMETER])
        return 1.0 if any(g.kind == "KIND_GPU" for g in self.instance_groups) else 0.0

    @property
    def num_cpus(self) -> float | None:
        """CPUs per replica from ``clara_cpu``, or None for the application's default."""
        return float(self.parameters[CPU_PARAMETER]) if CPU_PARAMETER in self.parameters else None

    @property
    def num_replicas(self) -> int:
        """Replicas: the instance counts (times the listed GPUs of a KIND_GPU group), at least 1."""
        total = sum(
            g.count * max(1, len(g.gpus) if g.kind == "KIND_GPU" else 1)
            for g in self.instance_groups
        )
        return max(1, total)

    def input(self, name: str) -> TensorConfig:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """KServe v2 model metadata."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.platform_or_backend,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": t.shape(self.max_batch_size)}
                for t in self.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": t.shape(self.max_batch_size)}
                for t in self.outputs
            ],
        }

    def to_json(self) -> dict[str, Any]:
        """The configuration in Triton's JSON form (``GET /v2/models/<m>/config``)."""
        back = {v: k for k, v in TYPE_TO_DATATYPE.items()}

        def tensor(t: TensorConfig) -> dict[str, Any]:
            out: dict[str, Any] = {
                "name": t.name,
                "data_type": back[t.datatype],
                "dims": list(t.dims),
            }
            if t.reshape is not None:
                out["reshape"] = {"shape": list(t.reshape)}
            if t.optional:
                out["optional"] = True
            return out

        policy: dict[str, Any]
        if self.version_policy.kind == "latest":
            policy = {"latest": {"num_versions": self.version_policy.num_versions}}
        elif self.version_policy.kind == "all":
            policy = {"all": {}}
        else:
            policy = {"specific": {"versions": list(self.version_policy.versions)}}
        out: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "max_batch_size": self.max_batch_size,
            "version_policy": policy,
            "input": [tensor(t) for t in self.inputs],
            "output": [tensor(t) for t in self.outputs],
            "instance_group": [
                {"count": g.count, "kind": g.kind, "gpus": list(g.gpus)}
                for g in self.instance_groups
            ],
            "default_model_filename": self.model_filename,
            "parameters": {k: {"string_value": v} for k, v in self.parameters.items()},
        }
        if self.dynamic_batching is not None:
            out["dynamic_batching"] = {
                "max_queue_delay_microseconds": self.dynamic_batching.max_queue_delay_microseconds,
                "preferred_batch_size": list(self.dynamic_batching.preferred_batch_size),
            }
        return out
