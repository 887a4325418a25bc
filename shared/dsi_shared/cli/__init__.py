"""`dsi`: run the services, drive a demo, audit the stores, operate the bus. Services are found through entry points;
each adds its own sub-commands (`ServiceSpec.commands`), as it adds its routes."""

from __future__ import annotations

from functools import cache

import typer

from dsi_shared.cli import run
from dsi_shared.cli.audit import audit_app, rules_app
from dsi_shared.cli.docs import docs_app
from dsi_shared.cli.ops import ops_app
from dsi_shared.service import ServiceSpec, discover

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


@cache
def build() -> typer.Typer:
    """The whole `dsi` tree. Built on first use, not at import: a service's command module imports this package,
    and discovering the services while one of them is being imported would be circular."""
    root = typer.Typer(help="Data Sharing Incentive and QIP data sharing: services, demo and audit.", no_args_is_help=True)
    root.command()(run.serve)
    root.command()(run.up)
    root.command()(run.demo)
    contribute(root, dict(GROUPS), discover())
    return root


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # `from dsi_shared.cli import app`
        return build()
    raise AttributeError(name)


def main() -> None:
    build()()
