"""`clara-ray dicom ...` and `clara-ray list exports`: the DICOM adapter's configuration and exports."""

from __future__ import annotations

import argparse
from typing import Any

import ray

from clara_ray import platform
from clara_ray.cli.output import emit, fmt_time, table
from clara_ray.client import call_actor
from clara_ray.errors import PlatformNotRunningError

_KIND = {
    "aetitle": "aetitle",
    "aetitles": "aetitle",
    "source": "source",
    "sources": "source",
    "destination": "destination",
    "destinations": "destination",
}


def create_aetitle(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {
        "ae_title": args.ae_title,
        "pipelines": args.pipeline,
        "grouping": args.grouping,
        "timeout": args.timeout,
        "priority": args.priority,
        "allowed_sop_classes": args.allow_sop_class,
        "ignored_sop_classes": args.ignore_sop_class,
    }
    entry = platform.connect(args.settings).core.dicom_put("aetitle", data)
    emit(args.json, entry, f"AE title {entry['ae_title']} -> {', '.join(entry['pipelines'])}")
    return 0


def create_source(args: argparse.Namespace) -> int:
    entry = platform.connect(args.settings).core.dicom_put(
        "source", {"ae_title": args.ae_title, "host": args.host}
    )
    emit(args.json, entry, f"source {entry['ae_title']}@{entry['host']}")
    return 0


def create_destination(args: argparse.Namespace) -> int:
    entry = platform.connect(args.settings).core.dicom_put(
        "destination",
        {
            "name": args.name,
            "ae_title": args.ae,
            "host": args.host,
            "port": args.port,
            "tls": args.tls,
        },
    )
    emit(
        args.json,
        entry,
        f"destination {entry['name']}: {entry['ae_title']}@{entry['host']}:{entry['port']}",
    )
    return 0


def list_entries(args: argparse.Namespace) -> int:
    config = platform.connect(args.settings).core.dicom_config()
    kind = _KIND[args.kind]
    if kind == "aetitle":
        rows = [a.model_dump(mode="json") for a in config.aetitles]
        text = table(
            [
                (
                    a["ae_title"],
                    ",".join(a["pipelines"]),
                    a["grouping"],
                    a["timeout"],
                    a["priority"],
                )
                for a in rows
            ],
            ["ae title", "pipelines", "grouping", "timeout", "priority"],
        )
    elif kind == "source":
        rows = [s.model_dump(mode="json") for s in config.sources]
        text = table([(s["ae_title"], s["host"]) for s in rows], ["ae title", "host"])
    else:
        rows = [d.model_dump(mode="json") for d in config.destinations]
        text = table(
            [(d["name"], d["ae_title"], d["host"], d["port"], d["tls"]) for d in rows],
            ["name", "ae title", "host", "port", "tls"],
        )
    emit(args.json, rows, text)
    return 0


def delete_entry(args: argparse.Namespace) -> int:
    kind = _KIND[args.kind]
    key = f"{args.key}@{args.host}" if kind == "source" else args.key
    if kind == "source" and not args.host:
        raise ValueError("deleting a source needs --host (a source is AE title plus host)")
    platform.connect(args.settings).core.dicom_delete(kind, key)
    emit(args.json, {"deleted": key, "kind": kind}, f"deleted {kind} {key}")
    return 0


def echo_destination(args: argparse.Namespace) -> int:
    from clara_ray.dicom.actors import ADAPTER_NAME

    platform.connect(args.settings)
    try:
        adapter = ray.get_actor(ADAPTER_NAME, namespace=args.settings.ray.namespace)
    except ValueError:
        raise PlatformNotRunningError(
            "the DICOM adapter is not running (settings dicom.enabled)"
        ) from None
    seconds = call_actor(adapter, "echo", args.destination)
    emit(
        args.json,
        {"destination": args.destination, "seconds": seconds},
        f"C-ECHO to {args.destination}: success in {seconds * 1000:.1f} ms",
    )
    return 0


def resend_export(args: argparse.Namespace) -> int:
    rec = platform.connect(args.settings).core.resend_export(args.export_id)
    emit(
        args.json,
        rec.to_dict(),
        f"export {rec.export_id} to {rec.destination}: {rec.state} (sent again)",
    )
    return 0


def list_exports(args: argparse.Namespace) -> int:
    recs = platform.connect(args.settings).core.list_exports(args.job, args.state)
    emit(
        args.json,
        [r.to_dict() for r in recs],
        table(
            [
                (
                    r.export_id[:12],
                    r.job_id[:12],
                    r.destination,
                    r.state,
                    r.attempts,
                    len(r.files),
                    fmt_time(r.updated_at),
                    r.reason,
                )
                for r in recs
            ],
            ["export", "job", "destination", "state", "attempts", "files", "updated", "reason"],
        ),
    )
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser, lst: Any) -> None:
    """`dicom` verb with its nouns, and `list exports`."""
    dicom = verbs.add_parser(
        "dicom", help="DICOM adapter: AE titles, sources, destinations, echo", parents=[common]
    )
    actions = dicom.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="add or replace an entry", parents=[common])
    nouns = create.add_subparsers(dest="noun", required=True, metavar="NOUN")
    p = nouns.add_parser("aetitle", help="a Clara AE title that runs pipelines", parents=[common])
    p.add_argument("ae_title")
    p.add_argument("--pipeline", action="append", required=True, help="repeat for several")
    p.add_argument("--grouping", choices=["study", "series"], default="study")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds of quiet that close a group")
    p.add_argument(
        "--priority", choices=["lower", "normal", "higher", "immediate"], default="normal"
    )
    p.add_argument("--allow-sop-class", action="append", default=[], metavar="UID")
    p.add_argument("--ignore-sop-class", action="append", default=[], metavar="UID")
    p.set_defaults(func=create_aetitle)
    p = nouns.add_parser("source", help="a known sending peer", parents=[common])
    p.add_argument("ae_title")
    p.add_argument("--host", required=True)
    p.set_defaults(func=create_source)
    p = nouns.add_parser("destination", help="where results are sent", parents=[common])
    p.add_argument("name")
    p.add_argument("--ae", required=True, help="called AE title")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.set_defaults(func=create_destination)
    p = actions.add_parser("list", help="list entries", parents=[common])
    p.add_argument("kind", choices=["aetitles", "sources", "destinations"])
    p.set_defaults(func=list_entries)
    p = actions.add_parser("delete", help="delete an entry", parents=[common])
    p.add_argument("kind", choices=["aetitle", "source", "destination"])
    p.add_argument("key", help="AE title, source AE title, or destination name")
    p.add_argument("--host", help="with `source`: its host")
    p.set_defaults(func=delete_entry)
    p = actions.add_parser("echo", help="C-ECHO a destination from the adapter", parents=[common])
    p.add_argument("destination")
    p.set_defaults(func=echo_destination)
    p = actions.add_parser("resend", help="send a Failed export again", parents=[common])
    p.add_argument("export_id", help="export id, or a unique prefix (`clara-ray list exports`)")
    p.set_defaults(func=resend_export)
    p = lst.add_parser("exports", help="list exports of DICOM results", parents=[common])
    p.add_argument("--job", help="only this job's")
    p.add_argument("--state", choices=["Pending", "InProgress", "Succeeded", "Failed"])
    p.set_defaults(func=list_exports)
