"""Run one job to its end: the entry point for ``ray job submit``.

    ray job submit --working-dir . -- python -m clara_ray.run PIPELINE PAYLOAD_DIR [--param k=v]

Joins the cluster it runs on (or the embedded platform's), ensures the Core
exists, uploads the payload, runs the pipeline, prints the described job as
JSON and exits 0 only if the job ended Healthy.
"""

from __future__ import annotations

import os

# Decide Ray's token authentication before ray is imported (see clara_ray.cli.main).
os.environ.setdefault("RAY_AUTH_MODE", "token")

import argparse
import json
import sys
from pathlib import Path

import ray

from clara_ray.cli.output import job_text
from clara_ray.client import PlatformClient
from clara_ray.config.settings import load_settings
from clara_ray.errors import ClaraError
from clara_ray.platform import connect, get_or_create_core


def _client(config: str | None) -> PlatformClient:
    settings = load_settings(config)
    if os.environ.get("RAY_ADDRESS") or settings.ray.address != "local":
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or settings.ray.address,
            namespace=settings.ray.namespace,
            log_to_driver=False,
        )
        core = get_or_create_core(settings)
        ray.get(core.ping.remote(), timeout=120)
        return PlatformClient.of_actor(settings, core)
    return connect(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clara_ray.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("pipeline", help="pipeline YAML file or stored pipeline name")
    parser.add_argument("payload", help="payload folder, payload id or dataset name")
    parser.add_argument("--param", action="append", default=[], metavar="K=V")
    parser.add_argument("--name", help="job name")
    parser.add_argument("--priority", default="normal")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the job")
    parser.add_argument("--download", type=Path, help="copy the results here when done")
    parser.add_argument("--config", help="settings YAML")
    parser.add_argument("--json", action="store_true", help="print the described job as JSON")
    args = parser.parse_args(argv)
    try:
        params = dict(p.split("=", 1) for p in args.param)
    except ValueError:
        parser.error("--param takes KEY=VALUE")
    try:
        client = _client(args.config)
        job = client.create_job(
            args.pipeline,
            args.payload,
            name=args.name,
            priority=args.priority,
            parameters=params,
            start=True,
        )
        described = client.wait_job(job.job_id, timeout=args.timeout)
        if args.download:
            client.download(job.job_id, None, args.download / job.job_id)
            described["downloaded_to"] = str(args.download / job.job_id)
    except (ClaraError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(described, indent=2, default=str))
    else:
        print(job_text(described))
        if args.download:
            print(f"\nresults downloaded to {described['downloaded_to']}")
    return 0 if described["status"] == "Healthy" else 4


if __name__ == "__main__":
    sys.exit(main())
