"""`make bench` / `python -m benchmarks [--quick|--full] [name ...]`: run the named benchmarks (default: all), each
printing its figures with their ratios to raw ceilings measured in the same run, then one summary table."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import time

BENCHMARKS = {"spine": "spine", "submissions": "submissions", "quarters": "quarters", "enrollment": "enrollment_import",
              "qip": "qip", "audit": "audit", "whatif": "whatif",
              "read_models": "read_models", "console": "console"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every figure (DSI_BENCH_SIZE=quick)")
    sizes.add_argument("--full", action="store_true", help="the issue's sizes, e.g. 500k members at quarter close "
                                                          "(DSI_BENCH_SIZE=full)")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.quick or args.full:
        os.environ["DSI_BENCH_SIZE"] = "quick" if args.quick else "full"  # read by the modules as they are imported
    from benchmarks import setting

    environment = [setting.postgres_durability()]
    print(environment[0], flush=True)
    load_at_start = os.getloadavg()[0]
    durations: dict[str, float] = {}
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(f"benchmarks.{BENCHMARKS[name]}")
        started = time.perf_counter()
        asyncio.run(module.main())
        durations[name] = time.perf_counter() - started
        print(f"  ({name}: {durations[name]:.0f} s)", flush=True)
    # Other work on the machine slows every figure and its ceiling alike: the ratios are the comparable numbers.
    environment.append(f"machine: {os.cpu_count()} cores, 1-minute load average {load_at_start:.1f} at start, "
                       f"{os.getloadavg()[0]:.1f} at end")
    print(setting.summary(durations, environment + setting.NOTES))


main()
