"""`python -m soak --runs N --seed S`: N seeded runs (seeds S, S+1, …), each compared with its clean twin."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import Counter

from dsi_shared.natsserver import port_open

from soak.run import Outcome, one_run


def postgres_server() -> str:
    found = os.environ.get("DSI_SOAK_POSTGRES") or os.environ.get("DSI_TEST_POSTGRES") or (
        "postgresql://postgres@127.0.0.1:5432/postgres" if port_open("127.0.0.1", 5432) else "")
    if not found:
        raise SystemExit("no PostgreSQL: set DSI_SOAK_POSTGRES to a DSN where the soak may create databases")
    return found


def report(outcome: Outcome) -> str:
    lines = [f"seed {outcome.seed} FAILED ({outcome.seconds:.0f} s); replay it: make soak SEED={outcome.seed} RUNS=1"]
    for title, items in (("lost", outcome.lost), ("doubled", outcome.doubled), ("differing", outcome.differing[:20]),
                         ("audit", outcome.audit)):
        lines += [f"  {title}: {item}" for item in items]
    lines.append("  fault schedule applied:")
    lines += [f"    {fault}" for fault in outcome.faults]
    return "\n".join(lines)


async def soak(runs: int, seed: int) -> int:
    # SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: the run in progress is cancelled, and its finally blocks stop
    # both systems' processes and drop their databases instead of leaving them running
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    began, postgres = time.monotonic(), postgres_server()
    kinds: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    failed: list[Outcome] = []
    lost = doubled = differing = holds = 0
    for n in range(runs):
        outcome = await one_run(seed + n, postgres)
        kinds.update(outcome.counts)
        exits.update(outcome.exits)
        holds += outcome.holds
        lost += bool(outcome.lost)
        doubled += bool(outcome.doubled)
        differing += bool(outcome.differing or outcome.audit)
        faults = sum(outcome.counts.values())
        held = f", faults held {outcome.holds}×" if outcome.holds else ""
        print(f"run {n + 1}/{runs} seed {outcome.seed}: {'ok' if outcome.ok else 'FAILED'}, {faults} faults{held}, "
              f"{outcome.seconds:.0f} s", flush=True)
        if not outcome.ok:
            failed.append(outcome)
            print(report(outcome), flush=True)
    print(f"{runs} runs, {lost} lost, {doubled} doubled, {differing} differing")
    print("faults injected: " + (", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "none"))
    print("services that exited by themselves (restarted, as a supervisor would): "
          + (", ".join(f"{name} {count}" for name, count in sorted(exits.items())) or "none"))
    print(f"faults held while a step waited over a minute to settle: {holds} time(s)")
    print(f"wall time: {time.monotonic() - began:.0f} s")
    for outcome in failed:
        print(f"reproduce: make soak SEED={outcome.seed} RUNS=1")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "3")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "1")))
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(soak(args.runs, args.seed)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped: the run in progress was not compared", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
