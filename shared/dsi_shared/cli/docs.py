"""`dsi docs`: the interface documents (the events each service publishes, checked against the lock; each service's
AsyncAPI document)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dsi_shared.cli.common import console
from dsi_shared.service import discover

docs_app = typer.Typer(help="Interface documents: the events each service publishes.", no_args_is_help=True)


@docs_app.command("contracts")
def docs_contracts(
    write: Annotated[bool, typer.Option("--write", help="refresh shared/contracts.lock.json (after a compatible "
                                                         "change; a breaking one needs a new schema version)")] = False,
) -> None:
    """Every subject the services publish, with its schema version and fields; exit 1 when a change breaks the lock."""
    from dsi_shared.contracts import compatibility_problems, lock_entries, read_lock, write_lock

    contracts = [spec.contract for spec in discover().values()]
    current = lock_entries(contracts)
    table = Table("subject", "version", "fields", "what it is")
    for contract in contracts:
        for model in contract.published:
            fields = ", ".join(f for f in model.model_fields if f not in {"aggregate_id", "aggregate_version"})
            table.add_row(model.subject, str(model.version), fields, (model.__doc__ or "").split("\n")[0])
    console.print(table)
    problems = compatibility_problems(read_lock(), current)
    for problem in problems:
        console.print(f"[red]BREAKING[/red] {problem}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    if write:
        write_lock(current)
        console.print(f"{len(current)} subjects written to the lock")


@docs_app.command("asyncapi")
def docs_asyncapi(
    out: Annotated[Path, typer.Option("--out", help="the folder to write them to")] = Path("docs/asyncapi"),
) -> None:
    """Each service's AsyncAPI document (what it publishes and reads on NATS), as `<service>.json` and `<service>.html`:
    the documents the services serve at /asyncapi.json and /asyncapi. Opens no store and no connection."""
    from dsi_shared import asyncapi
    from dsi_shared.config import Settings
    from dsi_shared.service import bus_endpoints

    out.mkdir(parents=True, exist_ok=True)
    for name, spec in discover().items():
        broker, _, _ = bus_endpoints(spec, Settings(name, spec.default_port), None)
        (out / f"{name}.json").write_text(json.dumps(asyncapi.document(broker, name), indent=2) + "\n")
        (out / f"{name}.html").write_text(asyncapi.page(broker, name))
        console.print(f"{name}: {out / (name + '.json')}, {out / (name + '.html')}", soft_wrap=True)
