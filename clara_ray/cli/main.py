"""``clara-ray VERB NOUN ...``: every command takes ``--json``; exit codes scripts can trust.

Exit status: 0 success; 1 an error the message explains; 2 bad usage;
3 no platform running; 4 a waited-for job ended other than Healthy.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The platform runs Ray with token authentication (the token lives in ~/.ray/auth_token).
# Ray reads RAY_AUTH_MODE once, when it is imported, so decide it before anything imports
# ray; RAY_AUTH_MODE=disabled in the environment opts out for clusters without tokens.
os.environ.setdefault("RAY_AUTH_MODE", "token")

from clara_ray.cli import commands, dicom_commands
from clara_ray.cli.output import EXIT_ERROR, EXIT_NOT_RUNNING
from clara_ray.config.settings import load_settings
from clara_ray.errors import ClaraError, PlatformNotRunningError

__all__ = ["build_parser", "main"]


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _common_options() -> argparse.ArgumentParser:
    """``--config`` and ``--json``, accepted at every level: before the verb, after the noun.

    SUPPRESS as the default: an option given early is not reset by a later sub-command's default.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=argparse.SUPPRESS, help="settings YAML (default: $CLARA_RAY_CONFIG)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return common


_COMMON = _common_options()


def _add(sub: Any, name: str, fn: Callable[..., int], help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, parents=[_COMMON]
    )
    p.set_defaults(func=fn)
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _COMMON
    parser = argparse.ArgumentParser(
        prog="clara-ray",
        parents=[common],
        description="clara-ray: medical-imaging pipelines on Ray (verbs as in the Clara CLI).",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str) -> Any:
        p = verbs.add_parser(name, help=help, parents=[common])
        return p.add_subparsers(dest="noun", required=True, metavar="NOUN")

    def simple(name: str, fn: Callable[..., int], help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, help=help, parents=[common])
        p.set_defaults(func=fn)
        return p

    simple("up", commands.up, "start the platform (a local Ray unless ray.address says otherwise)")
    simple("down", commands.down, "stop the platform's actors (and a Ray that `up` started)")
    simple("status", commands.status, "actors, Serve apps, ports and dashboard URL")

    create = verb("create", "create a pipeline, payload or job")
    p = _add(create, "pipeline", commands.create_pipeline, "validate and store a pipeline file")
    p.add_argument("file", type=Path)
    p = _add(create, "payload", commands.create_payload, "upload a folder as a sealed payload")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", help="name it as a reusable dataset")
    p = _add(create, "job", commands.create_job, "create a job of a pipeline on a payload")
    p.add_argument("-p", "--pipeline", required=True, help="pipeline name or YAML file")
    p.add_argument("-f", "--payload", required=True, help="payload id, dataset name or folder")
    p.add_argument("-n", "--name", help="job name (default: <pipeline>-<UTC timestamp>)")
    p.add_argument(
        "--priority", default="normal", choices=["lower", "normal", "higher", "immediate"]
    )
    p.add_argument("--param", action="append", type=_kv, default=[], metavar="K=V")
    p.add_argument(
        "--meta", action="append", type=_kv, default=[], metavar="K=V", help="job metadata"
    )
    p.add_argument("--start", action="store_true", help="queue the job at once")
    p.add_argument("--wait", action="store_true", help="with --start: wait until it stops")
    p.add_argument("--timeout", type=float, help="seconds to wait with --wait")

    lst = verb("list", "list pipelines, payloads, jobs or exports")
    _add(lst, "pipelines", commands.list_pipelines, "list pipelines")
    _add(lst, "payloads", commands.list_payloads, "list payloads")
    p = _add(lst, "jobs", commands.list_jobs, "list jobs")
    p.add_argument("--state", choices=["Pending", "Running", "Stopped"])
    p.add_argument("--status", choices=["Healthy", "Faulted", "Canceled", "Evicted", "Timeout"])
    p.add_argument("--pipeline")

    describe = verb("describe", "show one pipeline or job in full")
    _add(describe, "pipeline", commands.describe_pipeline, "show a pipeline").add_argument("name")
    _add(describe, "job", commands.describe_job, "show a job and its operators").add_argument(
        "job_id"
    )

    delete = verb("delete", "delete a pipeline or payload")
    _add(delete, "pipeline", commands.delete_pipeline, "delete a pipeline").add_argument("name")
    _add(delete, "payload", commands.delete_payload, "delete a payload").add_argument("payload")

    start = verb("start", "queue a created job")
    _add(start, "job", commands.start_job, "queue a job").add_argument("job_id")
    cancel = verb("cancel", "cancel a job")
    _add(cancel, "job", commands.cancel_job, "cancel a job").add_argument("job_id")

    p = simple("logs", commands.logs, "log lines of a job's operators")
    p.add_argument("job_id")
    p.add_argument("--operator", help="only this operator")
    p = simple("download", commands.download, "copy a job's results: JOB[:/operators/OP] DEST")
    p.add_argument("source", help="JOB_ID or JOB_ID:/operators/OPERATOR")
    p.add_argument("dest", type=Path)

    dicom_commands.add_parsers(verbs, common, lst)

    validate = verb("validate", "check a pipeline file without storing it")
    _add(validate, "pipeline", commands.validate_pipeline, "validate a pipeline file").add_argument(
        "file", type=Path
    )
    p = simple("sample-study", commands.sample_study, "write the bundled synthetic CT study")
    p.add_argument("dest", type=Path)
    p.add_argument("--slices", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    args.config = getattr(args, "config", None)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.settings = load_settings(args.config)
        code: int = args.func(args)
        return code
    except PlatformNotRunningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ClaraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
