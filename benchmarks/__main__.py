"""Run every benchmark and print its figures and ratios (also saved to bench-results/)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCHMARKS = ("handoff", "pipelines", "dicom_ingest", "inference", "render", "scaleout")


def main() -> None:
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    for name in BENCHMARKS:
        result = importlib.import_module(f"benchmarks.{name}").run()
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
