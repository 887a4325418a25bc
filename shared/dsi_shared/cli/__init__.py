"""`dsi`: run the services, drive a demo, audit the stores, operate the bus. Services are found through entry points;
each adds its own sub-commands (`ServiceSpec.commands`), as it adds its routes."""

from __future__ import annotations

import typer

from dsi_shared.cli import run
from dsi_shared.cli.audit import audit_app, rules_app
from dsi_shared.cli.docs import docs_app
from dsi_shared.cli.ops import ops_app
from dsi_shared.service import ServiceSpec, discover

app = typer.Typer(help="Data Sharing Incentive and QIP data sharing: services, demo and audit.", no_args_is_help=True)
app.command()(run.serve)
app.command()(run.up)
app.command()(run.demo)
GROUPS = {"audit": audit_app, "rules": rules_app, "ops": ops_app, "docs": docs_app}


def contribute(root: typer.Typer, groups: dict[str, typer.Typer], specs: dict[str, ServiceSpec]) -> None:
    """Each service's own commands, under their group (a group no one else has is made by the service naming it)."""
    for spec in specs.values():
        for command in spec.commands:
            if command.group not in groups:
                groups[command.group] = typer.Typer(help=command.group_help, no_args_is_help=True)
            groups[command.group].command(command.name)(command.run)
    for name, group in groups.items():
        root.add_typer(group, name=name)


contribute(app, dict(GROUPS), discover())


def main() -> None:
    app()
