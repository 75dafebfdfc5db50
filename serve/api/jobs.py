"""Jobs: create (and start), list with filters, describe, logs, start, cancel."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.records import JobPriority, JobState, JobStatus
from clara_ray.errors import NotFoundError
from serve.api.context import Context
from serve.api.params import parse_since

__all__ = ["NewJob", "router"]

router = APIRouter(tags=["jobs"])


class NewJob(BaseModel):
    """The body of ``POST /api/v1/jobs``."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(description="Name of a stored pipeline.")
    payload: str = Field(description="Id or name of a payload.")
    name: str | None = Field(None, description="Job name; default: <pipeline>-<UTC time>.")
    priority: JobPriority = Field(
        JobPriority.NORMAL, description="lower, normal, higher or immediate."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Values of the pipeline's parameters."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Labels kept with the job.")
    start: bool = Field(True, description="Queue the job at once (else POST .../start later).")


@router.post("/api/v1/jobs", status_code=201)
async def create_job(ctx: Context, body: NewJob) -> dict[str, Any]:
    job = await ctx.core(
        CoreClient.create_job,
        uuid.uuid4().hex,
        body.pipeline,
        body.payload,
        name=body.name,
        priority=str(body.priority),
        parameters=body.parameters,
        metadata=body.metadata,
    )
    if body.start:
        job = await ctx.core(CoreClient.start_job, job.job_id)
    return job.to_dict()


@router.get("/api/v1/jobs")
async def jobs(
    ctx: Context,
    state: str | None = None,
    status: str | None = None,
    pipeline: str | None = None,
    since: str | None = None,
) -> list[dict[str, Any]]:
    """Jobs in creation order; ``since``: created at or after (epoch seconds or ISO 8601)."""
    found = await ctx.core(
        CoreClient.list_jobs,
        state=str(JobState.parse(state, "query parameter 'state'")) if state else None,
        pipeline=pipeline or None,
        status=str(JobStatus.parse(status, "query parameter 'status'")) if status else None,
        since=parse_since(since),
    )
    return [j.to_dict() for j in found]


@router.get("/api/v1/jobs/{job_id}")
async def job(ctx: Context, job_id: str) -> dict[str, Any]:
    """The job with its operators, exports and result files."""
    return await ctx.core(CoreClient.describe_job, job_id)


@router.get("/api/v1/jobs/{job_id}/logs")
async def logs(ctx: Context, job_id: str, operator: str | None = None) -> dict[str, str]:
    """Log text per operator (404 for an operator the job does not have)."""
    described = await ctx.core(CoreClient.describe_job, job_id, results=False)
    names = [op["name"] for op in described["operators"]]
    if operator is not None and operator not in names:
        raise NotFoundError(
            f"job {job_id} has no operator '{operator}' (operators: {', '.join(names)})"
        )
    return await ctx.io(ctx.storage.read_logs, job_id, operator)


@router.post("/api/v1/jobs/{job_id}/start")
async def start(ctx: Context, job_id: str) -> dict[str, Any]:
    return (await ctx.core(CoreClient.start_job, job_id)).to_dict()


@router.post("/api/v1/jobs/{job_id}/cancel")
async def cancel(ctx: Context, job_id: str) -> dict[str, Any]:
    return (await ctx.core(CoreClient.cancel_job, job_id)).to_dict()
