"""Arguments of the inference application, and what the builder decides from them per model.

:class:`InferenceAppArgs` is the ``args`` of the Serve config
(``serve/inference.yaml``) of the inference application and of each model's
application; :class:`ModelPlan` is what one model deployment needs, decided once
by :func:`serve.inference.build_model_app`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from clara_ray.inference.errors import ModelRepositoryError
from clara_ray.inference.messages import (
    MAX_REQUEST_BYTES,
)
from clara_ray.inference.repository import ModelEntry

__all__ = [
    "AutoscalingArgs",
    "InferenceAppArgs",
    "ModelPlan",
    "batch_settings",
    "resolve_repository",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent


class AutoscalingArgs(BaseModel):
    """Ray Serve autoscaling for every model deployment (replaces the instance_group count)."""

    model_config = ConfigDict(extra="forbid")
    min_replicas: int = Field(1, ge=0, description="Fewest replicas per model.")
    max_replicas: int = Field(2, ge=1, description="Most replicas per model.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, description="Ongoing requests per replica the autoscaler aims at."
    )
    upscale_delay_s: float = Field(10.0, ge=0, description="Seconds of load before scaling up.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Seconds idle before scaling down.")

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingArgs":
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        return self


class InferenceAppArgs(BaseModel):
    """Arguments of :func:`build_app` (the ``args`` of the Serve config)."""

    model_config = ConfigDict(extra="forbid")
    model_repository: str = Field(
        "models",
        description="Triton-layout model repository; a relative path is tried from the current "
        "directory, then from the clara-ray source tree.",
    )
    models: list[str] | None = Field(None, description="Models to serve; default: every model.")
    model: str | None = Field(
        None,
        description="The one model of a model application (serve.inference:build_model_app, "
        "route prefix /v2/models/<model>); not used by the inference application itself.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token every route but /v2/health/* requires (`clara-ray up` passes "
        "serve.api_token); when not given, the platform settings' serve.api_token "
        "($CLARA_RAY_CONFIG, CLARA_RAY_SERVE__API_TOKEN).",
    )
    skip_invalid_models: bool = Field(
        False,
        description="With `models` unset: log and skip models whose folder is malformed "
        "(e.g. not trained yet) instead of failing the application.",
    )
    max_batch_size: int | None = Field(
        None,
        ge=1,
        description="Rows per dynamic batch, for every model; default: the config's max_batch_size "
        "when it declares dynamic_batching, else 1 (no batching).",
    )
    batch_wait_timeout_s: float | None = Field(
        None,
        ge=0,
        description="Seconds a batch waits to fill; default: the config's "
        "dynamic_batching.max_queue_delay_microseconds.",
    )
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="Per model replica; default: max(2 x batch size, 16)."
    )
    autoscaling: AutoscalingArgs | None = Field(
        None, description="Autoscaling per model; default: fixed replicas from instance_group."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs per model replica unless clara_cpu says.")
    device: str = Field("auto", description="Torch device of TorchScript models: auto, cpu, cuda.")
    gpu_fallback: bool = Field(
        True,
        description="On a cluster with no GPU at all, run GPU models on CPU with a warning "
        "instead of waiting forever for a GPU.",
    )
    triton_url: str | None = Field(
        None,
        description="Forward every model to this Triton server (host:port) instead of running "
        "the model files; the repository still gives configs.",
    )
    triton_protocol: Literal["http", "grpc"] = Field("http", description="Protocol for triton_url.")
    max_request_bytes: int = Field(
        MAX_REQUEST_BYTES, ge=1, description="Largest accepted request body, in bytes."
    )
    ingress_max_ongoing_requests: int = Field(
        256, ge=1, description="Concurrent HTTP requests per ingress replica."
    )


@dataclass(frozen=True)
class ModelPlan:
    """What one model deployment needs, decided once by the builder."""

    entry: ModelEntry
    max_batch_size: int
    batch_wait_timeout_s: float
    device: str
    triton_url: str | None
    triton_protocol: Literal["http", "grpc"]
    max_request_bytes: int
    api_token: SecretStr | None


def resolve_repository(path: str) -> Path:
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.is_dir():
        return candidate.resolve()
    fallback = _REPO_ROOT / candidate
    return fallback if fallback.is_dir() else candidate.resolve()


def batch_settings(entry: ModelEntry, args: InferenceAppArgs) -> tuple[int, float]:
    config = entry.config
    if config.max_batch_size == 0:
        return 1, 0.0
    batching = config.dynamic_batching
    size = args.max_batch_size or (config.max_batch_size if batching else 1)
    if size > config.max_batch_size:
        raise ModelRepositoryError(
            f"max_batch_size {size} of the inference app exceeds model {entry.name!r}'s "
            f"max_batch_size {config.max_batch_size} ({entry.config_file})"
        )
    if args.batch_wait_timeout_s is not None:
        wait = args.batch_wait_timeout_s
    else:
        wait = batching.max_queue_delay_microseconds / 1e6 if batching else 0.0
    return size, wait
