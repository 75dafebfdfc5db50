"""The Ray task that runs one operator (a thin wrapper over :func:`run_operator_call`)."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.runner.execute import OperatorCall, run_operator_call

__all__ = ["operator_task"]


@ray.remote
def operator_task(call: OperatorCall, runner: Any, *values: Any) -> Any:
    """Run ``call`` on this worker; returns the outputs in declared order, then a metadata dict.

    ``values`` are the upstream outputs (top-level ObjectRefs, so Ray resolves
    them, zero-copy for numpy on the same node) in the order of
    ``call.input_names``.  ``runner`` (the actor hosting the job's run) is told when
    the operator starts, so it can enforce timeouts and report the node and GPUs.
    """
    keep_patient_data_out_of_logs()
    ctx = ray.get_runtime_context()
    gpu_ids = tuple(int(g) for g in ray.get_gpu_ids())
    node_id = ctx.get_node_id()
    node_ip = ray.util.get_node_ip_address()
    started = time.time()
    if runner is not None:
        runner.operator_started.remote(
            call.job_id, call.operator, started, node_id, node_ip, list(gpu_ids), call.job_run
        )
    outcome = run_operator_call(
        call,
        dict(zip(call.input_names, values, strict=True)),
        gpu_ids=gpu_ids,
        attempt=str(os.getpid()),
    )
    meta = {
        "started_at": started,  # the value reported to the runner above
        "ended_at": outcome.ended_at,
        "node_id": node_id,
        "node_ip": node_ip,
        "gpu_ids": list(gpu_ids),
    }
    outputs = tuple(outcome.outputs[name] for name in call.output_names)
    return (*outputs, meta) if outputs else meta
