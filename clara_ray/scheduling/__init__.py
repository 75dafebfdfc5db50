"""Scheduling: what a job needs, what the cluster holds, and who runs next.

A job's *demand* is, per resource, the most its operators can hold at once
(:mod:`.demand`); a job is admitted when its demand fits next to what the
running jobs hold, in priority order, and an urgent job that does not fit may
evict running jobs of strictly lower priority (:mod:`.admission`).  All plain
code: the Core applies the plan, the runner host reads the cluster
(:mod:`clara_ray.runner.cluster`).
"""

from clara_ray.contracts.resources import ClusterCapacity, Resources
from clara_ray.scheduling.admission import (
    AdmissionPlan,
    Eviction,
    QueuedJob,
    RunningJob,
    plan_admission,
)
from clara_ray.scheduling.demand import OperatorDemand, peak_demand, pipeline_demand
from clara_ray.scheduling.refusal import refusal

__all__ = [
    "AdmissionPlan",
    "ClusterCapacity",
    "Eviction",
    "OperatorDemand",
    "QueuedJob",
    "Resources",
    "RunningJob",
    "peak_demand",
    "pipeline_demand",
    "plan_admission",
    "refusal",
]
