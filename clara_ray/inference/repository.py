"""A Triton-layout model repository: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/<version>/model.pt``.

The model configuration is Triton's protobuf text format; :func:`parse_pbtxt`
is a small tolerant parser (comments, ``:`` before messages optional, ``[..]``
lists, ``<..>`` messages, ``,``/``;`` separators) and :class:`ModelConfig`
reads the fields clara-ray uses:

- ``name``, ``platform`` / ``backend``, ``max_batch_size``,
  ``default_model_filename``;
- ``input`` / ``output``: ``name``, ``data_type`` (``TYPE_FP32``...),
  ``dims``, optional ``reshape { shape: [..] }`` and ``optional``;
- ``instance_group``: ``count``, ``kind`` (``KIND_CPU``/``KIND_GPU``/
  ``KIND_AUTO``), ``gpus``; the replicas of a Serve deployment;
- ``dynamic_batching``: ``max_queue_delay_microseconds``,
  ``preferred_batch_size``;
- ``version_policy``: ``latest { num_versions }``, ``all {}`` or
  ``specific { versions }``;
- ``parameters { key: ".." value { string_value: ".." } }``, including the
  clara-ray extensions ``clara_gpu`` (GPUs per replica, fractional allowed,
  e.g. ``"0.5"``) and ``clara_cpu`` (CPUs per replica).

Other Triton fields are accepted and ignored.  Errors name the file and key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from clara_ray.errors import ClaraError
from clara_ray.inference.protocol import UnknownModelError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_MODEL_FILENAMES",
    "TYPE_TO_DATATYPE",
    "DynamicBatching",
    "InstanceGroup",
    "ModelConfig",
    "ModelEntry",
    "ModelRepository",
    "ModelRepositoryError",
    "TensorConfig",
    "VersionPolicy",
    "check_torchscript",
    "parse_pbtxt",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"

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


class ModelRepositoryError(ClaraError, ValueError):
    """The model repository is malformed; the message names the file and the key."""


# --------------------------------------------------------------------------- text format

Message = dict[str, list[Any]]
"""A parsed message: every field name maps to the list of its values (repeated or not)."""

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?[fF]?(?![\w.]))
  | (?P<ident>[-+]?[A-Za-z_][\w.]*)
  | (?P<punct>[{}\[\]<>:,;])
    """,
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.items: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ModelRepositoryError(f"{source}:{line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            if kind != "ws":
                self.items.append((kind, m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def next(self, expect: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise ModelRepositoryError(f"{self.source}: unexpected end of file, expected {expect}")
        self.i += 1
        return tok

    def error(self, tok: tuple[str, str, int], expect: str) -> ModelRepositoryError:
        return ModelRepositoryError(f"{self.source}:{tok[2]}: expected {expect}, got {tok[1]!r}")


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _scalar(tokens: _Tokens) -> Any:
    tok = tokens.next("a value")
    kind, raw, _ = tok
    if kind == "string":
        value = _unquote(raw)
        while (nxt := tokens.peek()) is not None and nxt[0] == "string":  # "a" "b" concatenates
            value += _unquote(tokens.next("a string")[1])
        return value
    if kind == "number":
        text = raw.rstrip("fF")
        return float(text) if any(c in text for c in ".eE") else int(text)
    if kind == "ident":
        lowered = raw.lower()
        if lowered in ("true", "t"):
            return True
        if lowered in ("false", "f"):
            return False
        if lowered.lstrip("+-") in ("inf", "infinity", "nan"):
            return float(lowered)
        return raw
    raise tokens.error(tok, "a value")


def _message(tokens: _Tokens, close: str | None) -> Message:
    out: Message = {}
    while True:
        tok = tokens.peek()
        if tok is None:
            if close is not None:
                raise ModelRepositoryError(
                    f"{tokens.source}: unexpected end of file, expected {close!r}"
                )
            return out
        if tok[1] == close:
            tokens.next(close)
            return out
        if tok[1] in (",", ";"):
            tokens.next("separator")
            continue
        if tok[0] != "ident":
            raise tokens.error(tok, "a field name")
        name = tokens.next("a field name")[1]
        colon = False
        if (nxt := tokens.peek()) is not None and nxt[1] == ":":
            tokens.next(":")
            colon = True
        values = out.setdefault(name, [])
        nxt = tokens.peek()
        if nxt is None:
            raise ModelRepositoryError(f"{tokens.source}: unexpected end of file after {name!r}")
        if nxt[1] in ("{", "<"):
            tokens.next("{")
            values.append(_message(tokens, "}" if nxt[1] == "{" else ">"))
        elif nxt[1] == "[":
            tokens.next("[")
            while (item := tokens.peek()) is not None and item[1] != "]":
                if item[1] == ",":
                    tokens.next(",")
                elif item[1] in ("{", "<"):
                    tokens.next("{")
                    values.append(_message(tokens, "}" if item[1] == "{" else ">"))
                else:
                    values.append(_scalar(tokens))
            tokens.next("]")
        elif colon:
            values.append(_scalar(tokens))
        else:
            raise tokens.error(nxt, f"':' or '{{' after field {name!r}")


def parse_pbtxt(text: str, source: str = "<config>") -> Message:
    """Parse protobuf text format into nested dicts of lists (every field may repeat)."""
    return _message(_Tokens(text, source), None)


# --------------------------------------------------------------------------- typed config


class _Fields:
    """Typed access to a parsed message; errors name the file and the dotted key."""

    def __init__(self, message: Message, source: str, prefix: str = "") -> None:
        self.message, self.source, self.prefix = message, source, prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}" if name else self.prefix.rstrip(".")

    def error(self, name: str, problem: str) -> ModelRepositoryError:
        return ModelRepositoryError(f"{self.source}: {self.key(name)}: {problem}")

    def one(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        values = self.message.get(name, [])
        if not values:
            return default
        if len(values) > 1:
            raise self.error(name, f"given {len(values)} times, expected once")
        value = values[0]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.error(name, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def many(self, name: str, kind: type) -> list[Any]:
        values = self.message.get(name, [])
        for v in values:
            if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
                raise self.error(name, f"expected a list of {_kind_name(kind)}, got {v!r}")
        return values

    def messages(self, name: str) -> Iterator[tuple[int, _Fields]]:
        for i, m in enumerate(self.many(name, dict)):
            yield i, _Fields(m, self.source, f"{self.key(name)}[{i}].")

    def sub(self, name: str) -> _Fields | None:
        m = self.one(name, dict)
        return None if m is None else _Fields(m, self.source, f"{self.key(name)}.")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a message { ... }",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


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


_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU", "KIND_MODEL")


def _tensor(f: _Fields, source_name: str) -> TensorConfig:
    name = f.one("name", str)
    if not name:
        raise f.error("name", "missing")
    data_type = f.one("data_type", str)
    if data_type is None:
        raise f.error("data_type", f"missing for {source_name} {name!r}")
    if data_type not in TYPE_TO_DATATYPE:
        raise f.error(
            "data_type",
            f"unknown data_type {data_type!r} for {source_name} {name!r}; "
            f"expected one of {', '.join(TYPE_TO_DATATYPE)}",
        )
    dims = f.many("dims", int)
    for d in dims:
        if d < 1 and d != -1:
            raise f.error(
                "dims",
                f"dimension {d} of {source_name} {name!r}: expected a positive integer or -1",
            )
    reshape_f = f.sub("reshape")
    reshape = tuple(reshape_f.many("shape", int)) if reshape_f is not None else None
    return TensorConfig(
        name=name,
        datatype=TYPE_TO_DATATYPE[data_type],
        dims=tuple(dims),
        reshape=reshape,
        optional=bool(f.one("optional", bool, False)),
    )


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
        f = _Fields(parse_pbtxt(text, source), source)
        name = f.one("name", str, "")
        platform = f.one("platform", str, "")
        backend = f.one("backend", str, "")
        max_batch_size = f.one("max_batch_size", int, 0)
        if max_batch_size < 0:
            raise f.error(
                "max_batch_size", f"must be 0 (no batching) or positive, got {max_batch_size}"
            )
        inputs = tuple(_tensor(g, "input") for _, g in f.messages("input"))
        outputs = tuple(_tensor(g, "output") for _, g in f.messages("output"))
        if not inputs:
            raise f.error("input", "the model declares no inputs")
        if not outputs:
            raise f.error("output", "the model declares no outputs")
        for label, tensors in (("input", inputs), ("output", outputs)):
            names = [t.name for t in tensors]
            for n in names:
                if names.count(n) > 1:
                    raise f.error(label, f"{label} name {n!r} is declared twice")
        groups = []
        for _, g in f.messages("instance_group"):
            count = g.one("count", int, 1)
            if count < 1:
                raise g.error("count", f"must be a positive integer, got {count}")
            kind = g.one("kind", str, "KIND_AUTO")
            if kind not in _KINDS:
                raise g.error("kind", f"unknown kind {kind!r}; expected one of {', '.join(_KINDS)}")
            groups.append(InstanceGroup(count=count, kind=kind, gpus=tuple(g.many("gpus", int))))
        batching = None
        if (b := f.sub("dynamic_batching")) is not None:
            delay = b.one("max_queue_delay_microseconds", int, 0)
            if delay < 0:
                raise b.error("max_queue_delay_microseconds", f"must not be negative, got {delay}")
            preferred = tuple(b.many("preferred_batch_size", int))
            if max_batch_size == 0:
                raise b.error("", "dynamic_batching needs max_batch_size > 0")
            for p in preferred:
                if not 1 <= p <= max_batch_size:
                    raise b.error(
                        "preferred_batch_size",
                        f"{p} is outside 1..max_batch_size ({max_batch_size})",
                    )
            batching = DynamicBatching(delay, preferred)
        policy = VersionPolicy()
        if (vp := f.sub("version_policy")) is not None:
            chosen = [k for k in ("latest", "all", "specific") if k in vp.message]
            if len(chosen) != 1:
                raise vp.error(
                    "", f"expected exactly one of latest, all, specific; got {chosen or 'none'}"
                )
            sub = vp.sub(chosen[0]) or _Fields({}, source, f"version_policy.{chosen[0]}.")
            if chosen[0] == "latest":
                n = sub.one("num_versions", int, 1)
                if n < 1:
                    raise sub.error("num_versions", f"must be a positive integer, got {n}")
                policy = VersionPolicy("latest", num_versions=n)
            elif chosen[0] == "all":
                policy = VersionPolicy("all")
            else:
                versions = tuple(sub.many("versions", int))
                if not versions:
                    raise sub.error("versions", "specific needs at least one version")
                policy = VersionPolicy("specific", versions=versions)
        parameters: dict[str, str] = {}
        for _, p in f.messages("parameters"):
            key = p.one("key", str)
            value = p.sub("value")
            if key is None or value is None:
                raise p.error("", 'expected key: ".." and value { string_value: ".." }')
            parameters[key] = str(value.one("string_value", (str, int, float), ""))
        config = cls(
            name=name,
            platform=platform,
            backend=backend,
            max_batch_size=max_batch_size,
            inputs=inputs,
            outputs=outputs,
            instance_groups=tuple(groups),
            dynamic_batching=batching,
            version_policy=policy,
            parameters=parameters,
            default_model_filename=f.one("default_model_filename", str, ""),
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


# --------------------------------------------------------------------------- repository


@dataclass(frozen=True)
class ModelEntry:
    """A model of the repository: its folder, its configuration and the versions it serves."""

    name: str
    path: Path
    config: ModelConfig
    versions: tuple[str, ...]

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def default_version(self) -> str:
        """The highest version served."""
        return self.versions[-1]

    def resolve_version(self, version: str | int | None) -> str:
        """``version`` as served, the default for None or ""; unknown ones raise :class:`UnknownModelError`."""
        if version is None or version == "":
            return self.default_version
        v = str(version)
        if v not in self.versions:
            raise UnknownModelError(
                f"model {self.name!r} has no version {v!r}; versions served: {', '.join(self.versions)}"
            )
        return v

    def model_file(self, version: str | int | None = None) -> Path:
        return self.path / self.resolve_version(version) / self.config.model_filename

    def metadata(self) -> dict[str, Any]:
        return self.config.metadata(list(self.versions))


class ModelRepository:
    """A folder of models in Triton's layout; :meth:`model` reads and checks one of them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ModelRepositoryError(f"model repository {str(self.root)!r} is not a directory")

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def names(self) -> list[str]:
        """The model folders (every non-hidden sub-folder, as Triton sees them), sorted."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def model(self, name: str) -> ModelEntry:
        """Read ``<root>/<name>``: its config, its version folders and their model files."""
        folder = self.root / name
        if not name or "/" in name or name.startswith(".") or not folder.is_dir():
            raise UnknownModelError(
                f"model {name!r} is not in the model repository {str(self.root)!r}; "
                f"models: {', '.join(self.names()) or 'none'}"
            )
        config_file = folder / CONFIG_FILE
        if not config_file.is_file():
            raise ModelRepositoryError(
                f"{config_file}: missing; every model folder needs a {CONFIG_FILE}"
            )
        config = ModelConfig.parse(config_file.read_text(), str(config_file))
        if not config.name:
            config = _replace_name(config, name)
        elif config.name != name:
            raise ModelRepositoryError(
                f"{config_file}: name: {config.name!r} does not match the model folder {name!r}"
            )
        available = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        if not available:
            raise ModelRepositoryError(
                f"{folder}: no version folder; expected numeric sub-folders such as "
                f"{folder / '1'} holding {config.model_filename}"
            )
        if config.version_policy.kind == "specific":
            missing = [v for v in config.version_policy.versions if v not in available]
            if missing:
                raise ModelRepositoryError(
                    f"{config_file}: version_policy.specific.versions: version folder "
                    f"{folder / str(missing[0])} is missing (found {', '.join(map(str, available))})"
                )
        served = [str(v) for v in config.version_policy.select(available)]
        for v in served:
            file = folder / v / config.model_filename
            if not file.exists():
                raise ModelRepositoryError(
                    f"{file}: missing model file for version {v} of model {name!r} "
                    f"(platform {config.platform_or_backend or 'unset'!r} expects {config.model_filename!r})"
                )
        return ModelEntry(name=name, path=folder, config=config, versions=tuple(served))

    def models(self, names: list[str] | None = None) -> list[ModelEntry]:
        """The named models (default: all); an empty repository is an error."""
        chosen = self.names() if names is None else names
        if not chosen:
            raise ModelRepositoryError(f"model repository {str(self.root)!r} holds no model")
        return [self.model(n) for n in chosen]


def _replace_name(config: ModelConfig, name: str) -> ModelConfig:
    return replace(config, name=name)


_INDEXED = re.compile(r"^.*__(\d+)$")


def _order(
    tensors: tuple[TensorConfig, ...], arg_names: list[str] | None, label: str, where: str
) -> list[str]:
    names = [t.name for t in tensors]
    indexed = [_INDEXED.match(n) for n in names]
    if all(indexed):
        idx = [int(m.group(1)) for m in indexed if m]
        if sorted(idx) != list(range(len(names))):
            raise ModelRepositoryError(
                f"{where}: {label} names {names} carry indices {sorted(idx)}; expected __0..__{len(names) - 1}"
            )
        return [n for _, n in sorted(zip(idx, names, strict=True))]
    if arg_names is None:
        return names
    unknown = [n for n in names if n not in arg_names]
    if unknown:
        raise ModelRepositoryError(
            f"{where}: {label} {unknown[0]!r} is neither named <name>__<index> nor an argument of "
            f"forward() (arguments: {', '.join(arg_names)})"
        )
    return sorted(names, key=arg_names.index)


def check_torchscript(
    config: ModelConfig, module: Any, file: str | Path
) -> tuple[list[str], list[str]]:
    """Check a loaded TorchScript ``module`` against ``config``; return input and output names in call order.

    Inputs map to ``forward``'s arguments by their ``__<index>`` suffix (Triton's
    PyTorch convention) or by argument name; outputs by suffix or position.  A
    config whose input or output count differs from the module's is an error
    naming both files.
    """
    where = f"{config.name!r}: config.pbtxt and {file}"
    schema = module.forward.schema
    args = [a for a in schema.arguments[1:]]  # drop self
    required = [a for a in args if a.default_value is None]
    if not len(required) <= len(config.inputs) <= len(args):
        raise ModelRepositoryError(
            f"{where} disagree: the config declares {len(config.inputs)} input(s) "
            f"({', '.join(t.name for t in config.inputs)}) but forward() takes {len(args)} "
            f"({', '.join(a.name for a in args)})"
        )
    returns: Any = schema.returns[0].type if schema.returns else None
    kind = returns.kind() if returns is not None else "NoneType"
    if kind == "TupleType":
        produced: int | None = len(returns.elements())
    elif kind == "TensorType":
        produced = 1
    else:  # a list or a dict: the count is only known at run time
        produced = None
    if produced is not None and produced != len(config.outputs):
        raise ModelRepositoryError(
            f"{where} disagree: the config declares {len(config.outputs)} output(s) "
            f"({', '.join(t.name for t in config.outputs)}) but forward() returns {produced}"
        )
    inputs = _order(config.inputs, [a.name for a in args], "input", where)
    outputs = _order(config.outputs, None, "output", where)
    return inputs, outputs
