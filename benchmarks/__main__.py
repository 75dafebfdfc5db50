"""Run every benchmark, save each one's figures to bench-results/<name>.json, and print them
with a summary of the comparisons: each ratio's median and range over its repeats.

Each benchmark runs our side and its comparison in the same run, alternating rounds; the
GPU benchmark runs only where a CUDA device is present.  ``python -m benchmarks NAME...``
runs only the named ones.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCHMARKS = ("handoff", "pipelines", "dicom_ingest", "inference", "render", "scaleout")


def _ratios(result: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``ratio*`` figure given as a median and range, with its path in the result."""
    if isinstance(result, dict):
        for key, value in result.items():
            where = f"{path}.{key}" if path else key
            if "ratio" in key and isinstance(value, dict) and "median" in value:
                yield where, value
            else:
                yield from _ratios(value, where)


def _selected(argv: list[str]) -> tuple[str, ...]:
    from benchmarks.gpu import cuda_present

    known = (*BENCHMARKS, "gpu")
    unknown = [name for name in argv if name not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; expected some of: {', '.join(known)}")
    if argv:
        return tuple(argv)
    return (*BENCHMARKS, "gpu") if cuda_present() else BENCHMARKS


def main(argv: list[str]) -> None:
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    summary: list[str] = []
    for name in _selected(argv):
        result = importlib.import_module(f"benchmarks.{name}").run()
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2), flush=True)
        for where, ratio in _ratios(result):
            summary.append(
                f"{name}.{where}: median {ratio['median']} "
                f"(range {ratio['min']}-{ratio['max']} over {len(ratio['runs'])} runs)"
            )
    print("\nsummary (each ratio over its repeats):")
    print("\n".join(f"  {line}" for line in summary) or "  no ratios")


if __name__ == "__main__":
    main(sys.argv[1:])
