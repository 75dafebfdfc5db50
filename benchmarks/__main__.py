"""Run every benchmark and print its figures and ratios (also saved to bench-results/)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import handoff


def main() -> None:
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    for name, bench in (("handoff", handoff),):
        result = bench.run()
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
