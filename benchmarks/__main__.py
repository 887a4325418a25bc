"""`make bench` / `python -m benchmarks [name ...]`: run the named benchmarks (default: all)."""

from __future__ import annotations

import asyncio
import sys

from benchmarks import audit, enrollment_import, qip, quarters, read_models, spine, submissions, whatif

BENCHMARKS = {"spine": spine.main, "enrollment": enrollment_import.main, "submissions": submissions.main,
              "quarters": quarters.main, "qip": qip.main, "audit": audit.main,
              "whatif": whatif.main, "read_models": read_models.main}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in chosen:
        asyncio.run(BENCHMARKS[name]())


main()
