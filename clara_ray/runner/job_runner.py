"""Job runners: :class:`JobRun` runs one job; :class:`JobRunnerHost` hosts them all.

A :class:`JobRun` submits every operator of its job as a Ray task at once
(upstream outputs passed as ObjectRefs, so Ray runs independent branches in
parallel and keeps volumes in the object store), owns those references,
enforces timeouts, answers cancellation, and reports every transition to the
Core.  Because the runner, not the Core, owns the job's objects, a Core restart
loses nothing: the runner retries its reports for ``report_retry_seconds``,
then keeps them in the host's :class:`~clara_ray.runner.outbox.ReportOutbox`
(a file next to the Core's database), which the host delivers in the
background, also after its own restart.  No report is dropped.

The runs live as threads in ``clara-runners``, one detached actor per
namespace (pinned to the head node, next to the Core): a job starts in
milliseconds instead of waiting for a fresh worker process, and running jobs
cost no process each.  Starting a job that already runs there is a no-op, so a
retried launch never runs a job twice.  If the host dies, its jobs' runners
are gone; the Core notices (``jobs`` no longer names them) and faults those
jobs with the reason, or starts them again if none of their operators had
started.  A job whose final report waits in the outbox still counts as the
host's, so a job that finished while the Core was unreachable is never faulted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

import ray
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.records import JobStatus
from clara_ray.errors import ClaraError
from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.pipeline import ResolvedOperator, ServiceSpec, parse_pipeline, resolve_pipeline
from clara_ray.runner.cluster import alive_nodes, node_resources, runnable_somewhere
from clara_ray.runner.execute import OperatorCall
from clara_ray.runner.metrics import RunnerMetrics
from clara_ray.runner.outbox import Report, ReportOutbox
from clara_ray.runner.task import operator_task
from clara_ray.storage import Storage

__all__ = ["RUNNER_HOST_NAME", "JobRun", "JobRunnerHost", "RunnerConfig"]

RUNNER_HOST_NAME = "clara-runners"
P = ParamSpec("P")
log = logging.getLogger(__name__)
_POLL_SECONDS = 0.2
_OUTBOX_SECONDS = 2.0  # between deliveries of held reports
_DELIVERY_RETRY_SECONDS = 5.0  # one delivery's wait for a restarting Core
_PLACEMENT_CHECK_SECONDS = 2.0  # between checks that some node can run each waiting operator


@dataclass(frozen=True)
class RunnerConfig:
    job_id: str
    job_name: str
    pipeline: str
    definition: str
    payload_id: str
    parameters: dict[str, Any]
    storage_uri: str
    namespace: str
    core_name: str
    report_retry_seconds: float = 120.0
    default_operator_timeout: float | None = None
    gpu_fallback: bool = True
    runtime_env: dict[str, Any] | None = None  # the job's (``ray job submit``), for its tasks
    run: int = 1  # which admission of the job this is; every report names it
    unschedulable_timeout: float | None = 300.0  # see scheduling.unschedulable_timeout


class _Stop(Exception):
    def __init__(self, status: JobStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class JobRun:
    """One job's run; ``host`` is the actor handle its operator tasks report starts to,
    ``outbox`` where reports the Core did not take are kept."""

    def __init__(
        self, config: RunnerConfig, host: Any, metrics: RunnerMetrics, outbox: ReportOutbox
    ) -> None:
        self.config = config
        self._host = host
        self._outbox = outbox
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._running_since: dict[str, float] = {}
        self._start_reports = threading.Lock()
        self._reported_starts: set[tuple[str, float]] = set()
        self._core = CoreClient(config.core_name, config.namespace, config.report_retry_seconds)
        self._metrics = metrics
        self._requests: dict[str, dict[str, float]] = {}  # operator -> its task's Ray resources
        self._unplaceable_since: dict[str, float] = {}

    # -- called by tasks and the Core, through the host ------------------------
    def operator_started(
        self, operator: str, started_at: float, node_id: str, node_ip: str, gpu_ids: list[int]
    ) -> None:
        with self._lock:
            self._running_since[operator] = started_at
        self._report_start(operator, started_at, node_id, node_ip, gpu_ids)

    def _report_start(
        self, operator: str, started_at: float, node_id: str, node_ip: str, gpu_ids: list[int]
    ) -> None:
        """Report an attempt's start to the Core exactly once, and before its end.

        The task's own start message and the runner's wait for the task's result
        run on different threads, so a short retry can finish before its start
        message arrives; :meth:`_finish` reports the start itself in that case.
        The lock is held across the Core call so the start always lands first.
        """
        with self._start_reports:
            if (operator, started_at) in self._reported_starts:
                return
            self._reported_starts.add((operator, started_at))
            self._report(
                CoreClient.operator_started,
                self.config.job_id,
                operator,
                started_at=started_at,
                node_id=node_id,
                node_ip=node_ip,
                gpu_ids=gpu_ids,
                run=self.config.run,
            )

    def cancel(self) -> None:
        self._cancel.set()

    # -- the job ---------------------------------------------------------------
    def run(self) -> str:
        """Run the job to its end and report how it ended; returns its status."""
        cfg = self.config
        began = time.time()
        try:
            status, reason = JobStatus.HEALTHY, None
            self._run_operators()
        except _Stop as stop:
            status, reason = stop.status, stop.reason
        except Exception as exc:  # an unexpected runner failure still ends the job, with its reason
            log.exception("job %s: runner failed", cfg.job_id)
            status, reason = JobStatus.FAULTED, f"job runner failed: {type(exc).__name__}: {exc}"
        self._metrics.job_finished(cfg.pipeline, str(status), time.time() - began)
        log.info("job %s stopped: %s %s", cfg.job_id, status, reason or "")
        self._report(CoreClient.job_stopped, cfg.job_id, str(status), reason, run=cfg.run)
        return str(status)

    def _run_operators(self) -> None:
        cfg = self.config
        spec = parse_pipeline(
            cfg.definition, source=f"pipeline '{cfg.pipeline}'", check_imports=False
        )
        plan = resolve_pipeline(spec, cfg.parameters)
        if cfg.run > 1:  # an evicted run may have left results part-written
            Storage(cfg.storage_uri).delete_results(cfg.job_id)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        outputs: dict[str, dict[str, Any]] = {}
        pending: dict[Any, ResolvedOperator] = {}
        for op in plan.operators:
            gpus = op.spec.requests.gpu
            if gpus and not has_gpus and cfg.gpu_fallback:
                self._warn_cpu_fallback(op.name, gpus)
                gpus = 0
            meta_ref, outputs[op.name] = self._submit(
                op, gpus, outputs, plan.services, spread=spec.scheduling == "spread"
            )
            pending[meta_ref] = op
        job_deadline = time.time() + spec.timeout if spec.timeout else None
        try:
            self._wait(pending, job_deadline, spec.timeout)
        except _Stop:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _submit(
        self,
        op: ResolvedOperator,
        gpus: float,
        outputs: dict[str, dict[str, Any]],
        services: tuple[ServiceSpec, ...],
        *,
        spread: bool,
    ) -> tuple[Any, dict[str, Any]]:
        cfg = self.config
        upstream = [i for i in op.inputs if i.from_]
        call = OperatorCall(
            job_id=cfg.job_id,
            job_name=cfg.job_name,
            pipeline=cfg.pipeline,
            operator=op.name,
            run=op.spec.run,
            args=op.args,
            input_names=tuple(i.argument for i in upstream),
            payload_inputs=tuple(i.argument for i in op.inputs if not i.from_),
            output_names=tuple(o.name for o in op.spec.output),
            storage_uri=cfg.storage_uri,
            payload_id=cfg.payload_id,
            parameters=cfg.parameters,
            services=services,
            job_run=cfg.run,
        )
        options: dict[str, Any] = {
            "name": f"{cfg.job_name}/{op.name}",
            "num_cpus": op.spec.requests.cpu,
            "num_gpus": gpus,
            "max_retries": op.spec.retries,
            "retry_exceptions": False,
            "num_returns": len(call.output_names) + 1,
        }
        if op.spec.requests.memory_bytes:
            options["memory"] = op.spec.requests.memory_bytes
        if spread:
            options["scheduling_strategy"] = "SPREAD"
        self._requests[op.name] = {
            name: float(amount)
            for name, amount in (
                ("CPU", options["num_cpus"]),
                ("GPU", options["num_gpus"]),
                ("memory", options.get("memory", 0)),
            )
            if amount
        }
        if cfg.runtime_env:
            options["runtime_env"] = cfg.runtime_env
        refs = operator_task.options(**options).remote(
            call, self._host, *[outputs[i.from_][i.name] for i in upstream if i.from_]
        )
        if not call.output_names:
            return refs, {}
        *out_refs, meta_ref = refs
        return meta_ref, dict(zip(call.output_names, out_refs, strict=True))

    def _wait(
        self,
        pending: dict[Any, ResolvedOperator],
        deadline: float | None,
        job_timeout: float | None,
    ) -> None:
        cfg = self.config
        next_placement_check = time.time() + _PLACEMENT_CHECK_SECONDS
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_SECONDS)
            for ref in ready:
                op = pending.pop(ref)
                self._finish(op, ref)
            if self._cancel.is_set():
                raise _Stop(JobStatus.CANCELED, "canceled by request")
            now = time.time()
            for op in pending.values():
                limit = op.spec.timeout or cfg.default_operator_timeout
                with self._lock:
                    since = self._running_since.get(op.name)
                if limit and since and now - since > limit:
                    message = f"operator '{op.name}' exceeded its timeout of {limit:g} s"
                    self._report_operator_stop(op.name, JobStatus.TIMEOUT, message)
                    raise _Stop(JobStatus.TIMEOUT, message)
            if cfg.unschedulable_timeout and now >= next_placement_check:
                next_placement_check = now + _PLACEMENT_CHECK_SECONDS
                self._check_placement(pending.values(), now, cfg.unschedulable_timeout)
            if deadline and now > deadline:
                raise _Stop(
                    JobStatus.TIMEOUT, f"job exceeded the pipeline timeout of {job_timeout:g} s"
                )

    def _check_placement(
        self, waiting: Iterable[ResolvedOperator], now: float, timeout: float
    ) -> None:
        """Fault the job when an operator has had no node able to run it for ``timeout``
        seconds (its GPU node was lost, say): Ray would keep such a task waiting forever."""
        try:
            nodes = alive_nodes()
        except RayError as exc:  # unknown now; checked again next time
            log.warning(
                "job %s: the cluster's nodes could not be read: %s", self.config.job_id, exc
            )
            return
        for op in waiting:
            request = self._requests.get(op.name, {})
            if runnable_somewhere(request, nodes):
                self._unplaceable_since.pop(op.name, None)
                continue
            since = self._unplaceable_since.setdefault(op.name, now)
            if now - since >= timeout:
                message = (
                    f"operator '{op.name}' cannot run: no node of the cluster has "
                    f"{node_resources(request).describe()} (waited {timeout:g} s, "
                    "scheduling.unschedulable_timeout)"
                )
                self._report_operator_stop(op.name, JobStatus.FAULTED, message)
                raise _Stop(JobStatus.FAULTED, message)

    def _finish(self, op: ResolvedOperator, ref: Any) -> None:
        cfg = self.config
        try:
            meta = ray.get(ref)
        except TaskCancelledError as exc:
            raise _Stop(JobStatus.CANCELED, f"operator '{op.name}' was canceled") from exc
        except RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            message = f"operator '{op.name}' failed: {type(cause).__name__}: {cause}"
            message = message.splitlines()[0] if len(message) > 2000 else message
            self._metrics.operator_finished(cfg.pipeline, op.name, str(JobStatus.FAULTED), None)
            self._report_operator_stop(op.name, JobStatus.FAULTED, message)
            raise _Stop(JobStatus.FAULTED, message) from exc
        except ray.exceptions.RayError as exc:  # worker crash after retries, lost object, ...
            message = (
                f"operator '{op.name}' failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            )
            self._report_operator_stop(op.name, JobStatus.FAULTED, message)
            raise _Stop(JobStatus.FAULTED, message) from exc
        self._report_start(
            op.name, meta["started_at"], meta["node_id"], meta["node_ip"], meta["gpu_ids"]
        )
        duration = meta["ended_at"] - meta["started_at"]
        self._metrics.operator_finished(cfg.pipeline, op.name, str(JobStatus.HEALTHY), duration)
        self._report(
            CoreClient.operator_stopped,
            cfg.job_id,
            op.name,
            status=str(JobStatus.HEALTHY),
            ended_at=meta["ended_at"],
            started_at=meta["started_at"],
            node_id=meta["node_id"],
            node_ip=meta["node_ip"],
            gpu_ids=meta["gpu_ids"],
            run=cfg.run,
        )

    def _report_operator_stop(self, operator: str, status: JobStatus, message: str) -> None:
        self._report(
            CoreClient.operator_stopped,
            self.config.job_id,
            operator,
            status=str(status),
            ended_at=time.time(),
            message=message,
            run=self.config.run,
        )

    def _warn_cpu_fallback(self, operator: str, gpus: float) -> None:
        warning = (
            f"operator '{operator}' requests {gpus:g} GPU but the cluster has no GPU resource; "
            "running it on CPU"
        )
        log.warning("job %s: %s", self.config.job_id, warning)
        self._report(CoreClient.job_warning, self.config.job_id, warning, run=self.config.run)

    def _report(
        self, verb: Callable[Concatenate[CoreClient, P], object], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Make a report (``verb``, a :class:`CoreClient` method) to the Core, riding out
        its restarts for up to ``report_retry_seconds``.

        A report the Core did not take (unreachable, or failing for a reason other
        than a ClaraError, such as storage it cannot read now) is kept in the outbox,
        and so is every later report of the job while one is held, to keep them in
        order.  A ClaraError (the Core refused the report) is raised.
        """
        job_id = self.config.job_id
        report = Report.of(verb)
        if self._outbox.holds(job_id):
            self._outbox.add(job_id, report, args, kwargs)
            return
        try:
            verb(self._core, *args, **kwargs)
        except ClaraError:
            raise
        except (RayError, ValueError) as exc:
            log.warning(
                "job %s: the Core did not take report %s (%s: %s); kept for delivery",
                job_id,
                report.value,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self._outbox.add(job_id, report, args, kwargs)


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=64)  # type: ignore[call-overload]
class JobRunnerHost:
    """``clara-runners``: runs each job's :class:`JobRun` in a thread of its own.

    ``outbox`` is the file of reports the Core did not take; a thread delivers
    them to the Core (``core_name`` in ``namespace``) every few seconds.
    """

    def __init__(self, outbox: str, core_name: str, namespace: str) -> None:
        keep_patient_data_out_of_logs()
        logging.basicConfig(level=logging.INFO)
        self._lock = threading.Lock()
        self._runs: dict[str, JobRun] = {}
        self._metrics = RunnerMetrics()
        self._outbox = ReportOutbox(Path(outbox))
        self._core = CoreClient(core_name, namespace, _DELIVERY_RETRY_SECONDS)
        threading.Thread(target=self._deliver, name="clara-runners-outbox", daemon=True).start()

    def _deliver(self) -> None:
        while True:
            try:
                self._outbox.deliver(self._core)
            except Exception:  # keep delivering; a broken round must not end the thread
                log.exception("delivering held reports failed")
            time.sleep(_OUTBOX_SECONDS)

    def start(self, config: RunnerConfig) -> bool:
        """Start running the job's run ``config.run``; False (a no-op) when that run, or a
        later one, already runs here or has run to its end here (its final report waits
        for delivery).  An earlier run of the job still winding down (it was evicted) is
        told to stop and left to finish; its reports name its run, which the Core ignores."""
        with self._lock:
            current = self._runs.get(config.job_id)
            if current is not None and current.config.run >= config.run:
                return False
            if self._outbox.holds_final_report(config.job_id, config.run):
                return False
            if current is not None:
                current.cancel()
            run = JobRun(
                config, ray.get_runtime_context().current_actor, self._metrics, self._outbox
            )
            self._runs[config.job_id] = run
        threading.Thread(
            target=self._run, args=(run,), name=f"job-{config.job_id}", daemon=True
        ).start()
        return True

    def _run(self, run: JobRun) -> None:
        try:
            run.run()
        finally:
            with self._lock:
                if self._runs.get(run.config.job_id) is run:
                    del self._runs[run.config.job_id]

    def running(self, job_id: str) -> bool:
        """Whether the job runs here or its final report waits here for delivery."""
        return job_id in self.jobs()

    def jobs(self) -> list[str]:
        """The jobs this host answers for: running, or holding their final report.

        The runs are read before the outbox: a run leaves ``_runs`` only after its
        final report was delivered or kept, so no job falls between the two.
        """
        with self._lock:
            running = set(self._runs)
        return sorted(running | self._outbox.final_reports())

    def pending_reports(self) -> list[str]:
        """The jobs whose final report waits for delivery to the Core."""
        return sorted(self._outbox.final_reports())

    def cancel(self, job_id: str, run: int | None = None) -> None:
        """Stop the job's run ``run`` (whichever runs when None)."""
        with self._lock:
            current = self._runs.get(job_id)
        if current is not None and run in (None, current.config.run):
            current.cancel()

    def operator_started(
        self,
        job_id: str,
        operator: str,
        started_at: float,
        node_id: str,
        node_ip: str,
        gpu_ids: list[int],
        job_run: int | None = None,
    ) -> None:
        """Reported by a task of the job's run ``job_run``; passed on from a thread of its
        own, so that no host thread waits on the Core (which may itself be waiting on
        :meth:`start`).  A late report of an earlier run is dropped."""
        with self._lock:
            run = self._runs.get(job_id)
        if run is not None and job_run in (None, run.config.run):
            threading.Thread(
                target=run.operator_started,
                args=(operator, started_at, node_id, node_ip, gpu_ids),
                daemon=True,
            ).start()
