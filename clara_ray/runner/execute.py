"""Run one operator call: plain code that the Ray task wraps (and tests call directly)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from clara_ray.context import OperatorContext
from clara_ray.errors import OperatorError
from clara_ray.phi import PydicomRecordFilter
from clara_ray.pipeline.load import import_operator
from clara_ray.pipeline.spec import ServiceSpec
from clara_ray.storage import Storage

__all__ = ["OperatorCall", "OperatorOutcome", "run_operator_call"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class OperatorCall:
    """Everything a worker needs to run one operator of one job (small, picklable)."""

    job_id: str
    job_name: str
    pipeline: str
    operator: str
    run: str
    args: dict[str, Any]
    input_names: tuple[str, ...]
    payload_inputs: tuple[str, ...]
    output_names: tuple[str, ...]
    storage_uri: str
    payload_id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    services: tuple[ServiceSpec, ...] = ()
    job_run: int = 1  # the job's run (admission) this call belongs to


@dataclass
class OperatorOutcome:
    outputs: dict[str, Any]
    started_at: float
    ended_at: float


class ServiceClients(Mapping[str, Any]):
    """``ctx.services``: an inference client per pipeline service, made on first use."""

    def __init__(self, specs: tuple[ServiceSpec, ...]) -> None:
        self._specs = {s.name: s for s in specs}
        self._clients: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._specs:
            raise KeyError(
                f"no service '{name}' in the pipeline (services: {', '.join(self._specs) or 'none'})"
            )
        if name not in self._clients:
            from clara_ray.inference.clients import make_client

            self._clients[name] = make_client(self._specs[name])
        return self._clients[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def _no_quoted_data(record: logging.LogRecord) -> bool:
    """Whether a record may be kept: never pydicom's (they quote element values), and
    highdicom's only from WARNING up (below, they name every source instance's UID)."""
    if not PydicomRecordFilter().filter(record):
        return False
    is_highdicom = record.name == "highdicom" or record.name.startswith("highdicom.")
    return not is_highdicom or record.levelno >= logging.WARNING


class _Capture(logging.Handler):
    """Collects the operator's log records, less those that quote DICOM data."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.buffer = io.StringIO()
        self.setFormatter(logging.Formatter(_LOG_FORMAT))
        self.addFilter(_no_quoted_data)

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.write(self.format(record) + "\n")


def run_operator_call(
    call: OperatorCall,
    inputs: dict[str, Any],
    *,
    gpu_ids: tuple[int, ...] = (),
    attempt: str = "1",
) -> OperatorOutcome:
    """Import and call the operator, check its outputs, and store its log lines.

    Records logged anywhere in the process during the call (the operator's own
    module loggers included) are kept as the operator's log in storage.
    """
    storage = Storage(call.storage_uri)
    logger = logging.getLogger(f"clara_ray.operator.{call.operator}")
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    started = time.time()
    try:
        payload = storage.payload_view(call.payload_id)
        ctx = OperatorContext(
            job_id=call.job_id,
            job_name=call.job_name,
            pipeline=call.pipeline,
            operator=call.operator,
            payload=payload,
            results=storage.results(call.job_id, call.operator),
            parameters=call.parameters,
            logger=logger,
            gpu_ids=gpu_ids,
            services=ServiceClients(call.services),
        )
        kwargs = {name: payload for name in call.payload_inputs} | inputs | call.args
        logger.info(
            "operator %s of job %s starting (gpus=%s)", call.operator, call.job_id, list(gpu_ids)
        )
        result = import_operator(call.run)(ctx, **kwargs)
        outputs = _check_outputs(call, result)
        logger.info("operator %s finished in %.3f s", call.operator, time.time() - started)
        return OperatorOutcome(outputs, started, time.time())
    except Exception:
        logger.exception("operator %s failed", call.operator)
        raise
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
        storage.write_log(
            call.job_id, call.operator, f"{started:.6f}-{attempt}", capture.buffer.getvalue()
        )


def _check_outputs(call: OperatorCall, result: Any) -> dict[str, Any]:
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise OperatorError(
            f"operator '{call.operator}' ({call.run}) must return a dict of its outputs "
            f"{list(call.output_names)}, got {type(result).__name__}"
        )
    missing = [n for n in call.output_names if n not in result]
    if missing:
        raise OperatorError(
            f"operator '{call.operator}' ({call.run}) did not return declared output(s) {missing}; "
            f"it returned {sorted(result)}"
        )
    return {n: result[n] for n in call.output_names}
