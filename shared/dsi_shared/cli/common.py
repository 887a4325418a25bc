"""What every `dsi` command shares: the consoles, `make run`'s run file, and a short-lived connection to the bus."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from dsi_shared.config import var_dir

console = Console()
errors = Console(stderr=True)  # what went wrong, apart from the output (a --json answer stays parseable)
RUN_FILE = "run.json"
T = TypeVar("T")


def running(service: str, role: str) -> tuple[str | None, str | None]:
    """The URL of a service and a token for a role from `make run`'s run file, when there is one."""
    run_file = var_dir() / RUN_FILE
    if not run_file.exists():
        return None, None
    run = json.loads(run_file.read_text())
    tokens = {r: t for t, _, r in (item.rpartition(":") for item in run["tokens"].split(","))}
    return run["urls"].get(service), tokens.get(role)


async def on_bus(work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `work(jetstream, naming)` against the bus: NATS_URL / DSI_BUS_PREFIX, else `make run`'s. NATS not
    reachable within seconds raises BusUnreachable (it never waits for ever)."""
    from dsi_shared.bus import Naming, connect_briefly

    run_file = var_dir() / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    url = os.environ.get("NATS_URL") or run.get("nats_url") or "nats://127.0.0.1:4222"
    naming = Naming(os.environ.get("DSI_BUS_PREFIX", run.get("bus_prefix", "")))
    user, password = os.environ.get("NATS_USER"), os.environ.get("NATS_PASSWORD")
    if user is None and "ops" in run.get("nats_users", {}):  # `make run`'s NATS: operators' commands run as `ops`
        user, password = "ops", run["nats_users"]["ops"]
    nc = await connect_briefly(url, "dsi-cli", user=user, password=password)
    try:
        return await work(nc.jetstream(), naming)
    finally:
        await nc.close()


def run_on_bus(work: Callable[[Any, Any], Awaitable[T]], hint: str = "") -> T:
    """`on_bus` for a command: NATS unreachable → a clear message (with `hint`) and exit code 2, within seconds."""
    from dsi_shared.bus import BusUnreachable

    try:
        return asyncio.run(on_bus(work))
    except BusUnreachable as exc:
        errors.print(f"[red]{exc}: start it, or point NATS_URL at it{hint}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
