"""One function per CLI command: parse nothing, call the platform, print, return an exit code."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clara_ray import platform
from clara_ray.cli.output import (
    EXIT_JOB_NOT_HEALTHY,
    EXIT_NOT_RUNNING,
    emit,
    fmt_time,
    job_text,
    progress_bar,
    table,
)
from clara_ray.client import PlatformClient
from clara_ray.errors import ClaraError, PipelineValidationError
from clara_ray.pipeline import load_pipeline


def _client(args: argparse.Namespace) -> PlatformClient:
    return platform.connect(args.settings)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- platform -------------------------------------------------------------------
def _status_text(st: dict[str, Any]) -> str:
    lines = [
        f"platform:   {'running' if st['running'] else 'not running'}",
        f"ray:        {st['ray_address']} (namespace {st['namespace']})",
        f"dashboard:  {st['dashboard_url'] or '-'}",
        f"data:       {st['data_dir']}",
        f"storage:    {st['storage']}",
    ]
    if st.get("serve"):
        lines.append(f"http api:   {st['serve'].get('url') or '-'}")
        for app in st["serve"].get("applications", []):
            lines.append(f"  serve app {app['name']}: {app['status']}")
    dicom = st.get("dicom") or {}
    if dicom.get("enabled"):
        state = "listening" if dicom.get("running") else "not running"
        lines.append(f"dicom:      {dicom['ae_title']}@{dicom['host']}:{dicom['port']} ({state})")
    if sched := st.get("scheduling"):
        capacity = sched.get("capacity") or {}
        total = capacity.get("total")
        held = (
            f"cpu {total['cpu']:g}, gpu {total['gpu']:g}, memory {total['memory'] / 2**30:.1f} GiB"
            + (f" on {len(capacity['nodes'])} node(s)" if capacity.get("nodes") else "")
            if total
            else "unknown"
        )
        evicting = ", ".join(sched["evicting_priorities"]) or "none"
        lines.append(
            f"cluster:    {held}; at most {sched['max_concurrent_jobs']} jobs; evicting: {evicting}"
        )
    lines.append("actors:     " + (", ".join(a["name"] for a in st["actors"]) or "-"))
    return "\n".join(lines)


def up(args: argparse.Namespace) -> int:
    st = platform.up(args.settings)
    lines = [_status_text(st)]
    if token := st.get("auth_token"):
        created = " (created; `clara-ray down` keeps it)" if token["created"] else ""
        lines.append(f"ray token:  {token['source']}{created}")
    if st.get("pipelines_registered"):
        lines.append("pipelines:  registered " + ", ".join(st["pipelines_registered"]))
    emit(args.json, st, "\n".join(lines))
    return 0


def down(args: argparse.Namespace) -> int:
    result = platform.down(args.settings)
    emit(args.json, result, "stopped: " + (", ".join(result["stopped"]) or "nothing was running"))
    return 0


def status(args: argparse.Namespace) -> int:
    st = platform.status(args.settings)
    emit(args.json, st, _status_text(st))
    return 0 if st["running"] else EXIT_NOT_RUNNING


# -- pipelines ------------------------------------------------------------------
def create_pipeline(args: argparse.Namespace) -> int:
    rec = _client(args).create_pipeline(args.file)
    emit(
        args.json,
        {"name": rec.name, "pipeline_id": rec.pipeline_id, "version": rec.version},
        f"{rec.name} (version {rec.version}, id {rec.pipeline_id})",
    )
    return 0


def list_pipelines(args: argparse.Namespace) -> int:
    recs = _client(args).core.list_pipelines()
    emit(
        args.json,
        [r.to_dict() | {"definition": None} for r in recs],
        table(
            [(r.name, r.version, fmt_time(r.updated_at), r.description) for r in recs],
            ["name", "version", "updated", "description"],
        ),
    )
    return 0


def describe_pipeline(args: argparse.Namespace) -> int:
    rec = _client(args).core.get_pipeline(args.name)
    emit(
        args.json,
        rec.to_dict(),
        f"# {rec.name} version {rec.version} from {rec.source}\n{rec.definition}",
    )
    return 0


def delete_pipeline(args: argparse.Namespace) -> int:
    _client(args).core.delete_pipeline(args.name)
    emit(args.json, {"deleted": args.name}, f"deleted pipeline {args.name}")
    return 0


def validate_pipeline(args: argparse.Namespace) -> int:
    try:
        spec = load_pipeline(args.file)
    except PipelineValidationError as exc:
        emit(args.json, {"valid": False, "problems": exc.problems}, "\n".join(exc.problems))
        return 1
    emit(
        args.json,
        {"valid": True, "name": spec.name, "operators": [o.name for o in spec.operators]},
        f"{args.file}: pipeline '{spec.name}' is valid ({len(spec.operators)} operators)",
    )
    return 0


# -- payloads -------------------------------------------------------------------
def create_payload(args: argparse.Namespace) -> int:
    client = _client(args)
    with progress_bar(_tree_size(args.dir), "uploading", not args.json) as bar:
        rec = client.upload_payload(args.dir, name=args.name, progress=bar.update)
    emit(args.json, rec.to_dict(), f"{rec.payload_id} ({rec.files} files, {rec.bytes} bytes)")
    return 0


def list_payloads(args: argparse.Namespace) -> int:
    recs = _client(args).core.list_payloads()
    emit(
        args.json,
        [r.to_dict() for r in recs],
        table(
            [(r.payload_id, r.name, r.files, r.bytes, fmt_time(r.created_at)) for r in recs],
            ["payload", "name", "files", "bytes", "created"],
        ),
    )
    return 0


def delete_payload(args: argparse.Namespace) -> int:
    _client(args).core.delete_payload(args.payload)
    emit(args.json, {"deleted": args.payload}, f"deleted payload {args.payload}")
    return 0


# -- jobs -----------------------------------------------------------------------
def create_job(args: argparse.Namespace) -> int:
    client = _client(args)
    size = _tree_size(Path(args.payload)) if Path(args.payload).exists() else 0
    with progress_bar(size, "uploading payload", not args.json) as bar:
        job = client.create_job(
            args.pipeline,
            args.payload,
            name=args.name,
            priority=args.priority,
            parameters=dict(args.param),
            metadata=dict(args.meta),
            start=args.start,
            progress=bar.update,
        )
    if args.wait:
        if not args.start:
            raise ClaraError("--wait needs --start (a job that is not queued never stops)")
        described = client.wait_job(job.job_id, timeout=args.timeout)
        emit(args.json, described, job_text(described))
        return 0 if described["status"] == "Healthy" else EXIT_JOB_NOT_HEALTHY
    emit(args.json, job.to_dict(), f"{job.job_id}")
    return 0


def start_job(args: argparse.Namespace) -> int:
    job = _client(args).core.start_job(args.job_id)
    emit(args.json, job.to_dict(), f"{job.job_id} {job.state}")
    return 0


def cancel_job(args: argparse.Namespace) -> int:
    job = _client(args).core.cancel_job(args.job_id)
    emit(args.json, job.to_dict(), f"{job.job_id} {job.state} / {job.status}")
    return 0


def list_jobs(args: argparse.Namespace) -> int:
    recs = _client(args).core.list_jobs(args.state, args.pipeline, args.status)
    emit(
        args.json,
        [r.to_dict() for r in recs],
        table(
            [
                (
                    r.job_id,
                    r.name,
                    r.pipeline,
                    r.state,
                    r.status,
                    r.priority,
                    fmt_time(r.created_at),
                )
                for r in recs
            ],
            ["job", "name", "pipeline", "state", "status", "priority", "created"],
        ),
    )
    return 0


def describe_job(args: argparse.Namespace) -> int:
    d = _client(args).core.describe_job(args.job_id)
    emit(args.json, d, job_text(d))
    return 0


def logs(args: argparse.Namespace) -> int:
    by_op = _client(args).logs(args.job_id, args.operator)
    text = "\n".join(f"==> {op} <==\n{body.rstrip()}" for op, body in sorted(by_op.items()))
    emit(args.json, by_op, text or "(no log lines yet)")
    return 0


def _parse_source(source: str) -> tuple[str, str | None]:
    job_id, sep, rest = source.partition(":")
    if not sep:
        return job_id, None
    parts = [p for p in rest.split("/") if p and p != "*"]
    if len(parts) != 2 or parts[0] != "operators":
        raise ClaraError(f"download source {source!r} must be JOB_ID or JOB_ID:/operators/OPERATOR")
    return job_id, parts[1]


def download(args: argparse.Namespace) -> int:
    job_id, operator = _parse_source(args.source)
    client = _client(args)
    with progress_bar(client.results_size(job_id, operator), "downloading", not args.json) as bar:
        files = client.download(job_id, operator, args.dest, progress=bar.update)
    if not files:
        raise ClaraError(
            f"job {job_id} has no results" + (f" for operator '{operator}'" if operator else "")
        )
    emit(
        args.json,
        {"dest": str(args.dest), "files": [f.path for f in files]},
        f"{len(files)} files to {args.dest}",
    )
    return 0


def sample_study(args: argparse.Namespace) -> int:
    from clara_ray.sample.ct_series import write_sample_study

    files = write_sample_study(args.dest, slices=args.slices, seed=args.seed)
    emit(
        args.json,
        {"dest": str(args.dest), "files": len(files)},
        f"wrote {len(files)} CT instances to {args.dest}",
    )
    return 0
