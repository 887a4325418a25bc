"""Enrollment's own `dsi` commands (`ServiceSpec.commands`): `dsi enrollment import-dsa-list`, against the running
service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from dsi_shared.cli.common import console, running
from dsi_shared.service import Command
from rich.table import Table


def enrollment_import_dsa_list(
    file: Annotated[Path, typer.Argument(help="the DxF DSA signatory list, CSV: legal_name[, npi, tin, signed_on]",
                                         exists=True, dir_okay=False, readable=True)],
    list_date: Annotated[str | None, typer.Option(help="the list's publication date, YYYY-MM-DD (default today)")] = None,
    url: Annotated[str | None, typer.Option(help="enrollment service URL (default: the running `make run`)")] = None,
    token: Annotated[str | None, typer.Option(envvar="DSI_TOKEN", help="a program-staff bearer token")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole report as JSON")] = False,
) -> None:
    """Record the DSA of every participant on the state's signatory list (matched by NPI/TIN: signed and accepted;
    by legal name only: signed, for staff to confirm). The same list again changes nothing."""
    import httpx

    default_url, default_token = running("enrollment", "program-staff")
    url, token = url or default_url, token or default_token
    if not url or not token:
        console.print("[red]no running system found: pass --url and --token (or set DSI_TOKEN)[/red]")
        raise typer.Exit(2)
    params = {"list_date": list_date} if list_date else {}
    response = httpx.post(f"{url.rstrip('/')}/agreements/dsa-signatories", params=params, content=file.read_bytes(),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}, timeout=600)
    body = response.json()
    if response.status_code != 200:
        console.print(f"[red]{response.status_code} {body.get('title')}: {body.get('detail')}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(body, indent=2))
        return
    table = Table(title=f"DSA signatory list of {body['list_date']}: {body['rows']} row(s)")
    for column in ("line", "matched by", "participant", "outcome"):
        table.add_column(column)
    for row in body["results"]:
        outcome = row["outcome"] + (" (staff to confirm)" if row.get("needs_staff_confirmation") else "")
        table.add_row(str(row["line"]), row["matched_by"] or "-", row["participant_id"] or "-", outcome)
    for error in body["errors"]:
        table.add_row(str(error["line"]), "-", "-", f"[red]{error['reason']}[/red]")
    console.print(table)
    console.print(f"{body['matched']} matched by NPI/TIN, {body['weak_matches']} by name only (for staff to confirm), "
                  f"{body['unmatched']} unmatched, {body['rejected']} unreadable; {body['recorded']} recorded, "
                  f"{body['already']} already recorded", soft_wrap=True)


COMMANDS = (Command("enrollment", "import-dsa-list", enrollment_import_dsa_list,
                    group_help="Enrollment: participants and their agreements."),)
