"""One typed settings tree: a YAML file, then environment overrides, validated once.

Environment overrides use the prefix ``CLARA_RAY_`` and ``__`` between nested
keys, e.g. ``CLARA_RAY_DATA_DIR=/srv/clara`` or ``CLARA_RAY_RAY__ADDRESS=auto``.
The file comes from ``--config`` or ``CLARA_RAY_CONFIG``.  Every error names
the key, the value and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from clara_ray.config.dicom import DicomSettings
from clara_ray.errors import ConfigError
from clara_ray.pipeline.spec import parse_memory

__all__ = [
    "CapacitySettings",
    "CoreSettings",
    "RaySettings",
    "SchedulingSettings",
    "ServeSettings",
    "Settings",
    "load_settings",
]

ENV_PREFIX = "CLARA_RAY_"
CONFIG_ENV = "CLARA_RAY_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RaySettings(_Section):
    address: str = Field(
        "local",
        description="'local' starts (or reuses) a Ray instance on this machine; 'auto', "
        "'host:port' or 'ray://host:10001' joins an existing cluster.",
    )
    namespace: str = Field("clara", description="Ray namespace holding the platform's actors.")
    gcs_port: int = Field(6380, ge=1, le=65535, description="GCS port of a locally started head.")
    dashboard_host: str = Field("127.0.0.1", description="Ray dashboard bind address.")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="Ray dashboard port.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs a locally started head declares.")
    num_gpus: int | None = Field(None, ge=0, description="GPUs a locally started head declares.")
    object_store_memory: int | None = Field(
        None, ge=78643200, description="Object store bytes for a locally started head."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v in ("local", "auto") or v.startswith("ray://") or re.match(r"^[\w.\-]+:\d+$", v):
            return v
        raise ValueError(f"got {v!r}; expected 'local', 'auto', 'host:port' or 'ray://host:port'")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", v):
            raise ValueError(f"got {v!r}; expected letters, digits, '-' or '_'")
        return v


class CoreSettings(_Section):
    max_concurrent_jobs: int = Field(
        4, ge=1, le=1000, description="Jobs running at once; the rest wait in the priority queue."
    )
    default_operator_timeout: float | None = Field(
        None, gt=0, description="Seconds for operators whose pipeline sets no timeout."
    )
    gpu_fallback: bool = Field(
        True,
        description="Run GPU operators on CPU (with a warning) when the cluster has no GPU at "
        "all; turn off on clusters whose GPU workers scale from zero, so jobs wait for them.",
    )
    event_retention: int = Field(
        100_000,
        ge=100,
        description="State-change events the Core keeps for the event stream "
        "(GET /api/v1/events); older ones are dropped.",
    )
    report_retry_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a job runner keeps retrying a report to a restarting Core.",
    )
    register_reference_pipelines: bool = Field(
        True,
        description="`clara-ray up` stores the shipped reference pipelines (pipelines/*.yaml) "
        "whose names are not taken yet, so `create job -p ct-lung-bone` works at once.",
    )


_Priority = Literal["lower", "normal", "higher", "immediate"]


class CapacitySettings(_Section):
    cpu: float | None = Field(None, ge=0, description="CPUs the cluster can grow to.")
    gpu: float | None = Field(None, ge=0, description="GPUs the cluster can grow to.")
    memory: int | str | None = Field(
        None, description="Memory the cluster can grow to: MiB, or a size like '512Gi'."
    )

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_memory(v)
        return v

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)


class SchedulingSettings(_Section):
    head_resource: str = Field(
        "clara_head",
        description="Custom Ray resource of the node that hosts the Core, the job runners and "
        "the DICOM adapter (declared with value 1 on that node: `clara-ray up` does it locally, "
        "the KubeRay head's rayStartParams in a cluster); where no node has it, Ray's head node.",
    )
    capacity: CapacitySettings = Field(
        default_factory=CapacitySettings,
        description="The most the cluster can hold, for clusters that autoscale: a job is "
        "refused only if it cannot fit this; each empty key: what the nodes have now.",
    )
    evicting_priorities: list[_Priority] = Field(
        default_factory=lambda: list[_Priority](["immediate"]),
        description="Priorities whose jobs, when they do not fit, evict running jobs of "
        "strictly lower priority (add `higher` to let higher jobs evict too; [] for none).",
    )
    min_run_before_reeviction: float = Field(
        60.0,
        ge=0,
        description="Seconds a requeued job runs before a job it already yielded to may evict "
        "it again.",
    )
    unschedulable_timeout: float | None = Field(
        300.0,
        gt=0,
        description="Seconds an operator may wait while no node of the cluster can run it "
        "(its GPU node was lost, say) before its job is Faulted; empty: wait for such a node.",
    )

    @field_validator("evicting_priorities", mode="before")
    @classmethod
    def _priorities(cls, v: Any) -> Any:
        """Also a comma-separated string (an environment override); empty: none."""
        if v is None:
            return []
        if isinstance(v, str):
            v = v.strip("[]").split(",")
        return [str(p).strip().lower() for p in v if str(p).strip()]

    @field_validator("head_resource")
    @classmethod
    def _resource(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,62}$", v) or v in ("CPU", "GPU", "memory"):
            raise ValueError(f"got {v!r}; expected a custom resource name like clara_head")
        return v


class ServeSettings(_Section):
    enabled: bool = Field(True, description="Start the HTTP API with `clara-ray up`.")
    app: str = Field(
        "serve.api:build_app",
        description="Import path of the Serve application builder that `clara-ray up` deploys.",
    )
    inference_app: str | None = Field(
        "serve.inference:deploy",
        description="Import path of the function that deploys the inference applications "
        "(KServe v2 on /v2, one application per model); empty: none.",
    )
    model_repository: Path = Field(
        Path("models"), description="Model repository (Triton layout) the inference app serves."
    )
    inference_cpus: float = Field(
        0.5, ge=0, description="CPUs reserved per model replica of the inference app."
    )
    host: str = Field(
        "127.0.0.1",
        description="HTTP bind address of Ray Serve's proxy; any address but loopback "
        "(127.0.0.0/8, ::1, localhost) needs serve.api_token.",
    )
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of Ray Serve's proxy.")
    ingress: Literal["proxy", "haproxy"] = Field(
        "proxy",
        description="HTTP front of Ray Serve on the Ray head `clara-ray up` starts: proxy "
        "(Serve's HTTP proxy actor; listens on serve.host:serve.port only) or haproxy (Ray's "
        "HAProxy ingress with direct ingress and Serve's throughput settings: a request goes "
        "from HAProxy straight to its application's replica, about 2.3x the inference "
        "throughput; HAProxy also opens its stats port 8404 and metrics port 9101 on every "
        "interface, and one such Ray per machine). Read when the Ray head starts.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token that every HTTP route but the health checks requires "
        "(`Authorization: Bearer <token>`), on the REST API and on /v2 inference; at least "
        "16 characters, e.g. `openssl rand -hex 32`. Also from CLARA_RAY_SERVE__API_TOKEN.",
    )
    max_upload_mb: int = Field(
        2048, ge=1, description="Largest payload upload (POST /api/v1/payloads) in MiB; 413 beyond."
    )

    @field_validator("api_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        text = v.get_secret_value()
        if len(text) < 16 or not (text.isascii() and text.isprintable()) or " " in text:
            raise ValueError(
                f"the token must be at least 16 printable ASCII characters without spaces, got "
                f"{len(text)} characters"
            )
        return v


class RenderSettings(_Section):
    enabled: bool = Field(True, description="Start the render server (`clara-render`) with `up`.")
    cache_mb: int = Field(
        2048, ge=16, description="Memory for volumes kept between views (LRU, in MiB)."
    )
    image_cache_mb: int = Field(
        128, ge=0, description="Memory for encoded views kept for repeated requests (MiB)."
    )
    num_cpus: float = Field(
        0.0, ge=0, description="CPUs reserved by the render server (its threads run anyway)."
    )
    num_gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs for the render server; with one, views are computed with cupy.",
    )


class Settings(_Section):
    data_dir: Path = Field(
        Path("~/.clara-ray"),
        description="Folder for the state database and, unless storage_uri says otherwise, files.",
        validate_default=True,  # so the default '~' is expanded too
    )
    storage_uri: str | None = Field(
        None,
        description="Where payloads and results live: a local path or a pyarrow URI "
        "(s3://bucket/prefix, gs://..., hdfs://...). Default: <data_dir>/storage.",
    )
    state_db: Path | None = Field(
        None, description="SQLite file. Default: <data_dir>/state/clara.db."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    ray: RaySettings = Field(default_factory=RaySettings)
    core: CoreSettings = Field(default_factory=CoreSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    render: RenderSettings = Field(default_factory=RenderSettings)
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    dicom: DicomSettings = Field(
        default_factory=DicomSettings, description="The DICOM adapter (listener, export, seeds)."
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def storage(self) -> str:
        return self.storage_uri or str(self.data_dir / "storage")

    @property
    def database(self) -> Path:
        return (self.state_db or self.data_dir / "state" / "clara.db").expanduser()

    @property
    def spool_dir(self) -> Path:
        return (self.dicom.spool_dir or self.data_dir / "spool").expanduser()

    @property
    def run_dir(self) -> Path:
        """Files describing a locally started platform (Ray address, pids)."""
        return self.data_dir / "run"


def _deep_set(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"key '{'.'.join(path)}': '{part}' is not a section")
        tree = node
    tree[path[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        _deep_set(out, path, None if value == "" else value)
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in top.items():
        merged[k] = (
            _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        )
    return merged


_SECRET_KEYS = frozenset({"serve.api_token"})
"""Keys whose values an error message never repeats."""


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path`` (or ``$CLARA_RAY_CONFIG``), then ``CLARA_RAY_*`` overrides."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path:
        source = f"settings file {path}"
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: must be a mapping of keys, got {type(loaded).__name__}")
        data = loaded or {}
    overrides = _env_overrides(env)
    if overrides:
        source += " with CLARA_RAY_* environment overrides"
    try:
        return Settings.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            env_name = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
            if err["type"] == "extra_forbidden":
                lines.append(f"{source}: key '{key}' is not a setting (env {env_name})")
            else:
                got = "(hidden)" if key in _SECRET_KEYS else repr(err.get("input"))
                lines.append(f"{source}: key '{key}' (env {env_name}): {err['msg']}; got {got}")
        raise ConfigError("\n".join(lines)) from exc
