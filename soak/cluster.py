"""One run's system: its own nats-server (`sync_interval: always`), one PostgreSQL database per service, and the five
services as `dsi serve` processes on fixed ports (a restarted process comes back where the workload expects it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from dsi_shared.config import env_name
from dsi_shared.natsserver import NatsServer, free_port

SERVICES = ("enrollment", "submissions", "milestones", "payments", "qip-share")
TOKENS = "staff:program-staff,hie-token:hie@*+backdate,auditor-token:auditor,ops-token:ops"
ACK_WAIT_SECONDS = 1.0  # short, so a SIGSTOP pause outlasts it and JetStream redelivers to the frozen consumer


class Cluster:
    def __init__(self, workdir: Path, postgres: str, payload_key: str) -> None:
        self.workdir, self.postgres, self.payload_key = workdir, postgres, payload_key
        self.logs = workdir / "logs"
        self.nats = NatsServer(workdir / "nats", log_file=workdir / "nats.log")
        tag = uuid.uuid4().hex[:8]
        self.databases = {name: f"dsi_soak_{tag}_{name.replace('-', '_')}" for name in SERVICES}
        self.ports = {name: free_port() for name in SERVICES}
        self.mllp_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.held: set[str] = set()  # services the fault injector has down on purpose
        self.exits: Counter[str] = Counter()  # processes that exited on their own (and were restarted)
        # Set while a step waits too long for the system to settle under faults (`settle.settled`): the injector then
        # holds its next fault until the system has settled, so the workload makes progress where recovery (a
        # loaded machine's restarts) is slower than the fault rate. How often it held is reported.
        self.faults_held = False
        self.holds = 0

    def store(self, name: str) -> str:
        return urlunsplit(urlsplit(self.postgres)._replace(path=f"/{self.databases[name]}"))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self) -> dict[str, str]:
        """What a `dsi` process of this run reads: the bus, every store, the key, the tokens."""
        return {**os.environ, "NATS_URL": self.nats.url, "DSI_BUS_PREFIX": "", "DSI_TOKENS": TOKENS,
                "DSI_PAYLOAD_KEY": self.payload_key, "DSI_HIE_MAX_DELAY_HOURS": str(24 * 366 * 10),
                "DSI_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS), "DSI_MAX_ATTEMPTS": "20",
                "DSI_CHECKPOINT_SECONDS": "1",
                # two systems of five services share one PostgreSQL (100 connections by default): small pools
                "POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4",
                "DSI_READY_MAX_LAG": "0",  # ready = every consumer and read model caught up (the settled check)
                "DSI_VAR_DIR": str(self.workdir / "var"),
                "SUBMISSIONS_MLLP_PORT": str(self.mllp_port),
                **{env_name(name, "STORE"): self.store(name) for name in SERVICES}}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nats.start()
        def create(conn: psycopg.Connection[Any]) -> None:
            for database in self.databases.values():
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{database}"')

        self.as_admin(create, patience=120)
        for name in SERVICES:
            self.spawn(name)
            self.wait_up(name, respawn=True)

    def spawn(self, name: str) -> None:
        env = {**self.env(), env_name(name, "PORT"): str(self.ports[name])}
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen([sys.executable, "-m", "dsi_shared.cli", "serve", name], env=env,
                                                    stdout=log, stderr=log)

    def wait_up(self, name: str, timeout: float = 90.0, respawn: bool = False) -> None:
        """Until the process answers `/healthz` (readiness may lag behind while NATS is down: that is the point)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if respawn and process.poll() is not None:  # it exited (e.g. the database refused it): again
                self.spawn(name)
            try:
                if httpx.get(f"{self.url(name)}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not come up (see {self.logs})")

    def kill(self, name: str) -> None:
        self.held.add(name)
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def restart(self, name: str) -> None:
        self.spawn(name)
        self.held.discard(name)

    def supervise(self) -> None:
        """What a deployment's supervisor does (compose: `restart: unless-stopped`): a service that exited by itself
        (exit 70: a background worker died) is started again, and counted."""
        for name, process in list(self.processes.items()):
            if name not in self.held and process.poll() is not None:
                self.exits[f"{name} (exit {process.returncode})"] += 1
                self.spawn(name)

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.processes[name].send_signal(sig)

    def terminate_connections(self) -> int:
        """`pg_terminate_backend` on every connection to this run's databases; how many were cut."""
        with psycopg.connect(self.postgres, autocommit=True) as conn:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY(%s)",
                                (list(self.databases.values()),)).fetchall()
        return len(rows)

    def allow_connections(self, allowed: bool) -> None:
        """Let the databases take connections again (retried: never leave them refusing), or refuse them (once)."""
        def alter(conn: psycopg.Connection[Any]) -> None:
            for database in self.databases.values():
                conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')

        self.as_admin(alter, patience=120 if allowed else 0)

    def as_admin(self, action: Callable[[psycopg.Connection[Any]], None], patience: float) -> None:
        """`action` on an autocommit connection to the server, retried for `patience` seconds while it refuses (it is
        shared: max_connections) — rather than fail the run."""
        deadline = time.monotonic() + patience
        while True:
            try:
                with psycopg.connect(self.postgres, autocommit=True) as conn:
                    action(conn)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.nats.stop()
        with psycopg.connect(self.postgres, autocommit=True) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for database in self.databases.values():
                if database in existing:  # a start that failed half-way made only some
                    conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
