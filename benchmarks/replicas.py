"""Replicas of a service as real processes (`dsi serve <name>`), as a scaled deployment runs them: one store, one
durable consumer per upstream stream, production settings (ack wait, attempts, checkpoints at their defaults)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from dsi_shared.config import env_name
from dsi_shared.natsserver import free_port


def spawn(name: str, count: int, nats_url: str, prefix: str, store: str, logs: Path,
          timeout: float = 60.0) -> list[subprocess.Popen[bytes]]:
    """Start `count` processes of service `name` (their output in `logs/<name>-<n>.log`), each ready (`/readyz`)
    before the next starts: replicas started together on a fresh PostgreSQL store race on creating its tables
    (`CREATE TABLE IF NOT EXISTS` is not safe against a concurrent one) and the loser exits."""
    processes: list[subprocess.Popen[bytes]] = []
    logs.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        port = free_port()
        env = {**os.environ, "NATS_URL": nats_url, "DSI_BUS_PREFIX": prefix, env_name(name, "STORE"): store,
               env_name(name, "PORT"): str(port), "DSI_TOKENS": "bench-ops:ops"}
        with open(logs / f"{name}-{n}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "dsi_shared.cli", "serve", name], env=env,
                                       stdout=log, stderr=log)
        processes.append(process)
        deadline = time.monotonic() + timeout
        while not _ready(f"http://127.0.0.1:{port}/readyz"):
            if process.poll() is not None or time.monotonic() > deadline:
                stop(processes)
                raise RuntimeError(f"a {name} replica did not become ready (see {logs})")
            time.sleep(0.1)
    return processes


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
