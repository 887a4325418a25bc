"""`dsi up`, `dsi serve`, `dsi demo`: the services as processes (supervised, restarted with backoff), the
development secrets `make run` makes (tokens, payload key, NATS users, MLLP TLS), and the demo against them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import typer

from dsi_shared.cli.common import RUN_FILE, console, errors
from dsi_shared.config import Settings, parse_grants, var_dir
from dsi_shared.demo import DEMO_NPI
from dsi_shared.natsperms import OUTSIDE_USERS
from dsi_shared.natsserver import NatsServer
from dsi_shared.service import ServiceRuntime, ServiceSpec, discover

WEB_ENTRY_POINT_GROUP = "dsi.web"


def serve(name: str) -> None:
    """Run one service (HTTP, relay, consumers) in the foreground."""
    from dsi_shared import httpserver

    specs = discover()
    if name not in specs:
        raise typer.BadParameter(f"unknown service {name!r}; known: {', '.join(specs)}")
    runtime = ServiceRuntime(specs[name], exit_on_crash=True)
    host = os.environ.get("DSI_HTTP_HOST", "127.0.0.1")
    # A service with pages of its own (the console) wraps its runtime in its web app (entry point group dsi.web).
    web = {ep.name: ep for ep in entry_points(group=WEB_ENTRY_POINT_GROUP)}.get(name)
    app = web.load()(runtime) if web is not None else runtime.http
    # No access log (request paths carry member ids); timeouts and connection limits: `dsi_shared.httpserver`.
    httpserver.serve(app, host, runtime.settings.port)


def _tokens() -> str:
    if raw := os.environ.get("DSI_TOKENS"):
        return raw
    roles = ("program-staff", "auditor", "ops", "hie", "provider")
    # the dev HIE may submit for any facility, on the server's clock (no +backdate); the dev provider is the
    # participant `make demo` registers (bound by its NPI: its id is not known before the demo runs)
    scopes = {"hie": "@*", "provider": f":{DEMO_NPI}"}
    return ",".join(f"dev-{role}-{secrets.token_urlsafe(12)}:{role}{scopes.get(role, '')}" for role in roles)


def _write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write a file only its owner may read or write (0600 from the first byte: it holds tokens or keys), whatever
    the umask; an existing file is replaced, or with `exclusive` left alone (FileExistsError)."""
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


def _payload_key(var: Path) -> str:
    """`DSI_PAYLOAD_KEY`, else the development key kept in var/ (created once, 0600: stored payloads must stay
    readable, and only by their owner)."""
    if key := os.environ.get("DSI_PAYLOAD_KEY"):
        return key
    path = var / "payload.key"
    try:
        _write_private(path, base64.b64encode(secrets.token_bytes(32)).decode(), exclusive=True)
    except FileExistsError:
        path.chmod(0o600)  # one made before keys were created private
    return path.read_text().strip()


RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds before restarting a service that died, by attempt
STABLE_SECONDS = 60.0  # a service that ran this long before dying starts again from the first backoff step


class Supervisor:
    """`dsi up`'s service processes: one that dies is restarted after a growing delay (RESTART_BACKOFF), and
    said so; the others keep running."""

    def __init__(self, names: list[str], spawn: Callable[[str], subprocess.Popen[bytes]], var: Path) -> None:
        self.spawn, self.var = spawn, var
        self.children = {name: spawn(name) for name in names}
        self.started = dict.fromkeys(names, time.monotonic())
        self.failures = dict.fromkeys(names, 0)
        self.restart_at: dict[str, float] = {}

    def check(self) -> None:
        now = time.monotonic()
        for name, child in list(self.children.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self.children[name], self.started[name] = self.spawn(name), now
                    console.print(f"[yellow]{name} restarted (pid {self.children[name].pid})[/yellow]")
                continue
            if child.poll() is None:
                continue
            if now - self.started[name] >= STABLE_SECONDS:
                self.failures[name] = 0
            delay = RESTART_BACKOFF[min(self.failures[name], len(RESTART_BACKOFF) - 1)]
            self.failures[name] += 1
            self.restart_at[name] = now + delay
            console.print(f"[red]{name} exited with {child.returncode}; restarting it in {delay:.0f} s "
                          f"(restart {self.failures[name]}); the other services keep running; see "
                          f"{self.var / (name + '.log')}[/red]", soft_wrap=True)

    def stop(self) -> None:
        running = [child for child in self.children.values() if child.poll() is None]
        for child in running:
            child.terminate()
        for child in running:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


def up() -> None:
    """Start the embedded NATS (unless NATS_URL is set) and every service; a service that dies is restarted (with
    backoff) while the others run on; Ctrl-C stops all of them."""
    var = var_dir().resolve()
    var.mkdir(parents=True, exist_ok=True)
    nats: NatsServer | None = None
    nats_url = os.environ.get("NATS_URL")
    specs = discover()
    nats_users: dict[str, str] = {}  # user → password, for the embedded server only
    if not nats_url:
        nats, nats_users = _embedded_nats(var, specs)
        nats_url = nats.url
    env = {**os.environ, "NATS_URL": nats_url, "DSI_TOKENS": _tokens(), "DSI_VAR_DIR": str(var),
           "DSI_PAYLOAD_KEY": _payload_key(var)}
    urls = {name: f"http://127.0.0.1:{Settings(name, spec.default_port).port}" for name, spec in specs.items()}

    mllp, hie_client = _dev_mllp_tls(var) if not os.environ.get("DSI_MLLP_TLS_CERT") else ({}, None)

    def spawn(name: str) -> subprocess.Popen[bytes]:
        own = {"NATS_USER": name, "NATS_PASSWORD": nats_users[name], "DSI_MANAGE_STREAMS": "false"} if nats_users else {}
        if name == "submissions":
            own.update(mllp)
        with open(var / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "dsi_shared.cli", "serve", name],
                                    env={**env, **own}, stdout=log, stderr=log)

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor = Supervisor(list(specs), spawn, var)
    try:
        outside = {user: nats_users[user] for user in OUTSIDE_USERS if user in nats_users}
        _write_private(var / RUN_FILE, json.dumps({"nats_url": nats_url, "tokens": env["DSI_TOKENS"], "urls": urls,
                                                   "bus_prefix": env.get("DSI_BUS_PREFIX", ""),
                                                   "nats_users": outside}, indent=2))
        _wait_ready(urls, supervisor, lambda: stopping)
        if not stopping:
            console.print("[bold]DSI is running[/bold] (Ctrl-C stops everything)")
            pages = {ep.name for ep in entry_points(group=WEB_ENTRY_POINT_GROUP)}
            for name, url in urls.items():
                store = Settings(name, specs[name].default_port).store
                docs = "pages, " if name in pages else f"OpenAPI {url}/docs, "
                console.print(f"  {name:12} {url}  ({docs}store {store}, log {var / (name + '.log')})", soft_wrap=True)
            console.print(f"NATS: {nats_url}" + (" (embedded, JetStream in var/nats)" if nats else ""))
            if hie_client:
                console.print(f"MLLP: mutual TLS; the development HIE's client certificate {hie_client}.crt and .key, "
                              f"trusting {mllp['DSI_MLLP_TLS_CLIENT_CA']}", soft_wrap=True)
            if "console" in urls:
                console.print(f"Console: {urls['console']}  (sign in with a token below)", soft_wrap=True)
            console.print("Tokens (Authorization: Bearer <token>; the console's sign-in):")
            for token, grant in parse_grants(env["DSI_TOKENS"]).items():
                bound = f" (participant {grant.participant})" if grant.participant else ""
                console.print(f"  {grant.role:14} {token}{bound}", soft_wrap=True)
            console.print("Try: make demo")
        while not stopping:
            supervisor.check()
            time.sleep(0.3)
    finally:
        supervisor.stop()
        if nats:
            nats.stop()
        console.print("stopped")


def _dev_mllp_tls(var: Path) -> tuple[dict[str, str], str]:
    """`make run`'s MLLP speaks mutual TLS as production does: a development CA (var/tls), the listener's
    certificate, and one client certificate for a development HIE bound to any sender."""
    from dsi_shared.devpki import DEV_HIE, dev_pki

    pki = dev_pki(var / "tls")
    return {"DSI_MLLP_TLS_CERT": str(pki.server_cert), "DSI_MLLP_TLS_KEY": str(pki.server_key),
            "DSI_MLLP_TLS_CLIENT_CA": str(pki.ca), "DSI_MLLP_PEERS": os.environ.get("DSI_MLLP_PEERS", f"{DEV_HIE}@*")}, \
        str(pki.client_cert.with_suffix(""))


def _embedded_nats(var: Path, specs: dict[str, ServiceSpec]) -> tuple[NatsServer, dict[str, str]]:
    """The embedded NATS with the same least-privilege users as compose (issue 12 §2), each with a password made
    for this run; the streams declared by `admin`, as at deploy time. Returns the server and the passwords."""
    from dsi_shared.bus import Naming, connect_briefly, ensure_streams
    from dsi_shared.consumer import by_stream
    from dsi_shared.natsperms import accounts_config, grants

    prefix = os.environ.get("DSI_BUS_PREFIX", "")
    users = grants({name: list(by_stream(spec.subscriptions)) for name, spec in specs.items()})
    passwords = {user: secrets.token_urlsafe(24) for user in users}
    server = NatsServer(var / "nats", log_file=var / "nats-server.log",
                        accounts=accounts_config(users, passwords, prefix)).start()

    async def declare() -> None:
        nc = await connect_briefly(server.url, "dsi-up", "admin", passwords["admin"])
        try:
            await ensure_streams(nc.jetstream(), Naming(prefix), strict=True)
        finally:
            await nc.close()

    asyncio.run(declare())
    return server, passwords


def _wait_ready(urls: dict[str, str], supervisor: Supervisor, stopping: Callable[[], bool], timeout: float = 60) -> None:
    """Until every service answers /readyz 200 (a service dying meanwhile is restarted, not fatal)."""
    import httpx

    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending and time.monotonic() < deadline and not stopping():
        supervisor.check()
        for name, url in list(pending.items()):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    if pending and not stopping():
        console.print(f"[red]not ready after {timeout:.0f}s: {', '.join(pending)}[/red]")


def demo() -> None:
    """Drive the thin flow against a running `dsi up`: register, sign LOA/DSA by HTTP and HIE by NATS
    (and DSA twice), accept the three in one staff action, then show the single $10,000 Milestone 1 payment."""
    from dsi_shared.demo import run_demo

    run_file = var_dir() / RUN_FILE
    if not run_file.exists():
        console.print("[red]nothing is running: start it with `make run` first[/red]")
        raise typer.Exit(1)
    from dsi_shared.bus import BusUnreachable

    try:
        raise typer.Exit(asyncio.run(run_demo(json.loads(run_file.read_text()), console)))
    except BusUnreachable as exc:
        errors.print(f"[red]{exc}: is `make run` still running?[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
