"""Printing results for people (tables) and for scripts (``--json``)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from tqdm import tqdm

__all__ = [
    "EXIT_ERROR",
    "EXIT_JOB_NOT_HEALTHY",
    "EXIT_NOT_RUNNING",
    "EXIT_USAGE",
    "emit",
    "fmt_time",
    "job_text",
    "progress_bar",
    "table",
]

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_JOB_NOT_HEALTHY = 1, 2, 3, 4


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    body = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A byte progress bar on stderr; silent for --json or when stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled or not sys.stderr.isatty(),
        file=sys.stderr,
        leave=False,
    )


def job_text(d: dict[str, Any]) -> str:
    lines = [
        f"job:       {d['job_id']}  ({d['name']})",
        f"pipeline:  {d['pipeline']}    payload: {d['payload_id']}    priority: {d['priority']}",
        f"state:     {d['state']} / {d['status']}"
        + (f"  ({d['reason']})" if d.get("reason") else ""),
        f"created:   {fmt_time(d['created_at'])}  started: {fmt_time(d['started_at'])}  "
        f"ended: {fmt_time(d['ended_at'])}"
        + (f"  ({d['duration']:.2f} s)" if d.get("duration") is not None else ""),
    ]
    if d.get("demand"):
        demand = d["demand"]
        memory = f", memory: {demand['memory'] / 2**30:.1f} GiB" if demand.get("memory") else ""
        lines.append(
            f"holds:     cpu: {demand.get('cpu', 0):g}, gpu: {demand.get('gpu', 0):g}{memory}"
            f"  (run {d.get('run', 0)})"
        )
    lines += [
        f"evicted:   {fmt_time(e['at'])} run {e['run']} by job {e['by']} ({e['priority']})"
        f"{', requeued' if e.get('requeued') else ''}: {e['reason']}"
        for e in d.get("evictions", [])
    ]
    lines += [f"warning:   {w}" for w in d.get("warnings", [])]
    if d.get("metadata"):
        lines.append("metadata:  " + ", ".join(f"{k}={v}" for k, v in d["metadata"].items()))
    ops = d.get("operators", [])
    if ops:
        lines += [
            "",
            table(
                [
                    (
                        o["name"],
                        o["state"],
                        o["status"],
                        o["attempts"],
                        f"{o['duration']:.3f}" if o["duration"] is not None else None,
                        o["node_ip"],
                        ",".join(str(g) for g in o["gpu_ids"]) or None,
                        o["message"],
                    )
                    for o in ops
                ],
                ["operator", "state", "status", "attempts", "seconds", "node", "gpus", "message"],
            ),
        ]
    if d.get("results"):
        lines += ["", "results:"] + [f"  {r['path']}  ({r['size']} bytes)" for r in d["results"]]
    return "\n".join(lines)
