"""The `dsi` command tree: services contribute their own sub-commands, and are audited after those they read."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from dsi_shared.cli import app, contribute
from dsi_shared.contracts import Contract
from dsi_shared.service import Command, ServiceSpec, discover, in_audit_order
from typer.testing import CliRunner


def spec(name: str, after: tuple[str, ...] = (), commands: tuple[Command, ...] = ()) -> ServiceSpec:
    unused: Any = None
    return ServiceSpec(name=name, default_port=1, application=unused, routes=unused, contract=Contract(name, ()),
                       after=after, commands=commands)


def test_a_service_contributes_its_commands_under_its_own_or_a_shared_group() -> None:
    def count(shout: bool = False) -> None:
        """Count the widgets."""
        print("3!" if shout else "3")

    def check() -> None:
        print("checked")

    root, audit = typer.Typer(), typer.Typer()
    audit.command("replay")(lambda: None)
    contribute(root, {"audit": audit}, {"widgets": spec("widgets", commands=(
        Command("widget", "count", count, group_help="Widgets (the widgets service)."), Command("audit", "check", check)))})
    runner = CliRunner()
    assert runner.invoke(root, ["widget", "count", "--shout"]).stdout == "3!\n"
    assert runner.invoke(root, ["audit", "check"]).stdout == "checked\n"
    assert "Widgets (the widgets service)." in runner.invoke(root, ["--help"]).stdout


def test_the_installed_services_commands_keep_their_names() -> None:
    runner = CliRunner()
    for group, command in (("quarter", "close"), ("enrollment", "import-dsa-list"), ("audit", "reproduce"),
                           ("audit", "disclosures"), ("audit", "replay"), ("rules", "what-if")):
        assert runner.invoke(app, [group, command, "--help"]).exit_code == 0, (group, command)


def test_each_service_is_audited_after_the_services_whose_report_it_reads() -> None:
    assert list(discover()) == ["console", "enrollment", "submissions", "milestones", "payments", "qip-share"]
    order = list(in_audit_order([spec("payments", ("milestones",)), spec("milestones", ("submissions",)),
                                 spec("submissions"), spec("enrollment")]))
    assert order == ["enrollment", "submissions", "milestones", "payments"]
    with pytest.raises(ValueError, match="cycle"):
        in_audit_order([spec("a", ("b",)), spec("b", ("a",))])
