"""Composition root of the console. It records nothing and publishes nothing: it reads and commands the other
services through their HTTP APIs (`reads.py`, `commands.py`) and serves its pages from `web.py`. The runtime still
gives it `/healthz`, `/readyz` and `/metrics` like every service."""

from __future__ import annotations

from typing import Any

from dsi_shared.contracts import Contract
from dsi_shared.http import Auth
from dsi_shared.service import ServiceSpec
from dsi_shared.store import ServiceApplication
from fastapi import APIRouter

CONTRACT = Contract("console", ())


class ConsoleStore(ServiceApplication):
    """What ServiceSpec asks of every service: a store. The console's stays empty (until it keeps read models)."""

    name = "console"


def routes(_: Any, __: Auth) -> APIRouter:
    return APIRouter()  # no bearer API of its own: its pages are `web.py`'s, behind a session cookie


service = ServiceSpec(
    name="console",
    default_port=8100,
    application=ConsoleStore,
    routes=routes,
    contract=CONTRACT,
)
