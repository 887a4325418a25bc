"""qip-share's own `dsi` commands (`ServiceSpec.commands`): `dsi audit reproduce` (a delivery rebuilt from the log
and the stored feeds) and `dsi audit disclosures` (a member's accounting of disclosures), on its store."""

from __future__ import annotations

import json
import time
from typing import Annotated
from uuid import UUID

import typer
from dsi_shared.cli.common import console
from dsi_shared.config import store_url
from dsi_shared.errors import NotFound
from dsi_shared.members import CIN
from dsi_shared.service import Command
from rich.table import Table

from qip_share.application import QipShare
from qip_share.contract import CONTRACT
from qip_share.ledger import Disclosure


def _store() -> QipShare:
    """This service's store, opened directly (read-only use), as `audit replay` opens every store."""
    return QipShare(store_url(CONTRACT.service))


def audit_reproduce(
    delivery_id: Annotated[str, typer.Argument(help="the delivery's id (GET /deliveries lists them)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Rebuild a QIP delivery from the event log as of its time and the stored feeds; prove every hash matches."""
    store = _store()
    try:
        started = time.monotonic()
        reproduction = store.reproduce(UUID(delivery_id))
        seconds = time.monotonic() - started
    except (ValueError, NotFound):
        console.print("[red]no such delivery[/red]")
        raise typer.Exit(2) from None
    finally:
        store.close()
    delivery = reproduction.delivery
    if as_json:
        print(json.dumps({"delivery_id": delivery_id, "matches": not reproduction.problems, "files": reproduction.files,
                          "manifest": {"recorded": delivery.manifest["sha256"], "rebuilt": reproduction.manifest_sha256},
                          "problems": reproduction.problems, "seconds": round(seconds, 2)}, indent=2))
    else:
        console.print(f"Delivery {delivery_id} to {delivery.entity_name} for {delivery.requirement} "
                      f"({delivery.period_start} to {delivery.period_end}), recorded {delivery.transaction_time.isoformat()} "
                      f"as of log position {delivery.position}", soft_wrap=True)
        table = Table(title="Rebuilt from the event log and stored feeds")
        for column in ("file", "recorded sha256", "rebuilt sha256", ""):
            table.add_column(column)
        rows = [*((f"{f['type']}.ndjson", f["recorded"], f["rebuilt"]) for f in reproduction.files),
                ("manifest.json", delivery.manifest["sha256"], reproduction.manifest_sha256)]
        for name, recorded, rebuilt in rows:
            table.add_row(name, recorded or "-", rebuilt or "-", "[green]match[/green]" if recorded == rebuilt
                          else "[red]DIFFERENT[/red]")
        console.print(table)
        for problem in reproduction.problems:
            console.print(f"[red]DIFFERENCE[/red] {problem}")
        console.print("[green]reproduced byte for byte[/green]" if not reproduction.problems
                      else f"[red]{len(reproduction.problems)} difference(s)[/red]", f"in {seconds:.1f} s")
    raise typer.Exit(1 if reproduction.problems else 0)


def audit_disclosures(
    member: Annotated[str, typer.Option("--member", help="the member's Medi-Cal CIN")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """A member's accounting of disclosures (45 CFR 164.528): every QIP delivery that carried their records."""
    if not CIN.match(member.strip().upper()):
        console.print("[red]--member is not a Medi-Cal CIN (8 digits then a letter)[/red]")
        raise typer.Exit(2)
    store = _store()
    try:
        found = store.disclosures_of(member.strip().upper())
    finally:
        store.close()
    entries = [_entry(d) for d in found]
    if as_json:
        print(json.dumps({"disclosures": entries}, indent=2))
        return
    table = Table(title=f"Accounting of disclosures: {len(entries)} disclosure(s)")
    for column in ("date", "recipients", "description", "purpose", "records", "withheld"):
        table.add_column(column)
    for d in found:
        table.add_row(d.disclosed_at.isoformat(), "; ".join(f"{r['name']}, {r.get('address', '')}" for r in d.recipients),
                      f"{', '.join(d.categories) or 'nothing'} ({d.period_start} to {d.period_end})", d.purpose,
                      ", ".join(f"{k} {v}" for k, v in d.records.items()) or "0",
                      ", ".join(f"{k} {v}" for k, v in d.withheld.items()) or "-")
    console.print(table)


def _entry(d: Disclosure) -> dict[str, object]:
    """One disclosure as the JSON accounting lists it."""
    return {"date": d.disclosed_at.isoformat(), "recipients": [r["name"] for r in d.recipients],
            "addresses": [r.get("address", "") for r in d.recipients], "purpose": d.purpose,
            "legal_basis": d.legal_basis, "period": f"{d.period_start} to {d.period_end}", "categories": d.categories,
            "records": d.records, "withheld": d.withheld, "delivery_id": str(d.delivery_id)}


COMMANDS = (Command("audit", "reproduce", audit_reproduce), Command("audit", "disclosures", audit_disclosures))
