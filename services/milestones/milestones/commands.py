"""Milestones' own `dsi` commands (`ServiceSpec.commands`): `dsi quarter close`, against the running service."""

from __future__ import annotations

from typing import Annotated

import typer
from dsi_shared.cli.common import console, running
from dsi_shared.service import Command


def quarter_close(
    quarter: Annotated[str, typer.Argument(help="the data-capture quarter, e.g. 2025Q4")],
    url: Annotated[str | None, typer.Option(help="milestones service URL (default: the running `make run`)")] = None,
    token: Annotated[str | None, typer.Option(envvar="DSI_TOKEN", help="a program-staff bearer token")] = None,
) -> None:
    """Close a quarter: evaluate every participant whose data sharing has started (once; again is no change)."""
    import httpx

    default_url, default_token = running("milestones", "program-staff")
    url, token = url or default_url, token or default_token
    if not url or not token:
        console.print("[red]no running system found: pass --url and --token (or set DSI_TOKEN)[/red]")
        raise typer.Exit(2)
    response = httpx.post(f"{url.rstrip('/')}/quarters/{quarter}/close", headers={"Authorization": f"Bearer {token}"},
                          timeout=600)
    body = response.json()
    if response.status_code != 200:
        console.print(f"[red]{response.status_code} {body.get('title')}: {body.get('detail')}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    state = "was already closed" if body["already_closed"] else "closed"
    console.print(f"{body['quarter']} {state} at {body['closed_at']} by {body['closed_by']}: "
                  f"{body['evaluations']} evaluation(s) for {body['participants']} participant(s), "
                  f"${body['earned']} earned, {body['adjustments']} adjustment(s); pending staff validation", soft_wrap=True)


COMMANDS = (Command("quarter", "close", quarter_close, group_help="Quarter closes (the milestones service)."),)
