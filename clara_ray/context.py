"""What an operator receives besides its named inputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clara_ray.storage import PayloadView, ResultsDir

__all__ = ["OperatorContext"]


@dataclass
class OperatorContext:
    """The world of one operator run, free of Ray.

    An operator is ``fn(ctx, **inputs, **args) -> dict[output name, value]``:
    ``inputs`` are its named inputs (upstream outputs, or the payload view for
    an input with no ``from``), ``args`` its ``args`` from the pipeline with
    ``${{ name }}`` placeholders substituted.  Tests build a context directly.
    """

    job_id: str
    job_name: str
    pipeline: str
    operator: str
    payload: PayloadView
    results: ResultsDir
    parameters: Mapping[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("clara_ray.operator"))
    gpu_ids: tuple[int, ...] = ()
    services: Mapping[str, Any] = field(default_factory=dict)

    @property
    def use_gpu(self) -> bool:
        """True when Ray assigned this run a GPU."""
        return bool(self.gpu_ids)
