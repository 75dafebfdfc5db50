"""Inference metrics through ``ray.util.metrics``: Ray's dashboard and Prometheus endpoint show them.

- ``clara_inference_requests_total{model, code}``: inference requests by HTTP-equivalent status code;
- ``clara_inference_batch_size{model}``: rows per batch the model ran;
- ``clara_inference_latency_seconds{model}``: time from a request's arrival at the model
  deployment to its result (queueing for a batch included).

Ray exports them some seconds after they are recorded, with its ``ray_`` prefix on the
Prometheus endpoint (``ray_clara_inference_requests_total``...).  Outside a Ray worker
(plain unit tests) recording is a no-op.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["BATCH_SIZE_BOUNDARIES", "LATENCY_BOUNDARIES", "InferenceMetrics"]

log = logging.getLogger(__name__)

LATENCY_BOUNDARIES = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
]
BATCH_SIZE_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]


class InferenceMetrics:
    """The three inference metrics, created on first use in the process that records them."""

    def __init__(self) -> None:
        self._made = False
        self._requests: Any = None
        self._batch: Any = None
        self._latency: Any = None

    def _make(self) -> bool:
        if not self._made:
            import ray

            if not ray.is_initialized():
                return False
            from ray.util.metrics import Counter, Histogram

            self._requests = Counter(
                "clara_inference_requests_total",
                description="Inference requests by model and status code.",
                tag_keys=("model", "code"),
            )
            self._batch = Histogram(
                "clara_inference_batch_size",
                description="Rows per batch a model ran.",
                boundaries=BATCH_SIZE_BOUNDARIES,
                tag_keys=("model",),
            )
            self._latency = Histogram(
                "clara_inference_latency_seconds",
                description="Seconds from a request's arrival at the model to its result.",
                boundaries=LATENCY_BOUNDARIES,
                tag_keys=("model",),
            )
            self._made = True
        return True

    def request(self, model: str, code: int) -> None:
        if self._make():
            self._requests.inc(1, tags={"model": model, "code": str(code)})

    def batch(self, model: str, size: int) -> None:
        if self._make():
            self._batch.observe(size, tags={"model": model})

    def latency(self, model: str, seconds: float) -> None:
        if self._make():
            self._latency.observe(seconds, tags={"model": model})
