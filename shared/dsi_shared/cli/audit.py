"""`dsi audit replay` and `verify` (every store rebuilt, payouts re-derived across services, hash chains checked)
and `dsi rules what-if` (the services' what-if hooks in turn): the auditor's cross-service commands. Services hand each
other facts only through the typed contexts of `dsi_shared.audit`, as the bus would."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dsi_shared.audit import AuditContext
from dsi_shared.cli.common import console, errors, on_bus
from dsi_shared.config import env_name, var_dir
from dsi_shared.events import IncomingEvent
from dsi_shared.plantime import PLAN_ZONE
from dsi_shared.rulebook import InvalidRulesDocument, RulesDocument, parse_document
from dsi_shared.service import AuditReport, discover
from dsi_shared.whatif import open_read_only

audit_app = typer.Typer(help="Rebuild and check what was paid and disclosed.", no_args_is_help=True)
rules_app = typer.Typer(help="Program rules: preview a version before publishing it.", no_args_is_help=True)


@rules_app.command("what-if")
def rules_what_if(
    rules_file: Annotated[Path | None, typer.Argument(help="the proposed rules document (JSON, as POST /program-rules "
                                                           "takes)")] = None,
    published: Annotated[str | None, typer.Option("--published", help="instead of a file: a version already "
                                                  "published — what it changed against the book without it, "
                                                  "already-paid results included")] = None,
    from_quarter: Annotated[str | None, typer.Option("--from", help="first quarter worked out, e.g. 2024Q4 "
                                                                     "(default: the earliest version's)")] = None,
    to_quarter: Annotated[str | None, typer.Option("--to", help="last quarter (default: the last one ended)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Work out every participant's files, Milestone 1 and quarters from the recorded history under the current
    rules and under the proposed version, and print the dollars and what changes, with reasons. With `--published
    V`, the same for a version already published (a correction's differences, for staff: results already paid are
    never rewritten). Nothing is recorded: the stores are only read."""
    from dsi_shared.whatif import UnknownVersion, quarters, what_if

    if (rules_file is None) == (published is None):
        raise typer.BadParameter("give either a RULES_FILE or --published VERSION")
    proposed: RulesDocument | None = None
    if rules_file is not None:
        try:
            proposed = parse_document(json.loads(rules_file.read_text()))
        except (OSError, ValueError) as exc:
            message = str(exc) if isinstance(exc, InvalidRulesDocument) else f"{rules_file}: {type(exc).__name__}"
            raise typer.BadParameter(message) from None
    try:
        first, last = quarters(from_quarter, to_quarter)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    def stage(name: str) -> Any:
        return console.status(f"working out {name} under both rule books") if not as_json else nullcontext()

    try:
        summary = what_if(proposed, published, first, last, stage=stage)
    except (UnknownVersion, InvalidRulesDocument) as exc:  # InvalidRulesDocument: another quarter calendar
        raise typer.BadParameter(str(exc)) from None
    participants: dict[str, dict[str, Any]] = summary["participants"]
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    verb = "changed" if published else "were published"
    table = Table(title=f"What if {summary['proposed_version']} (effective {summary['effective_from']}) {verb}: "
                        f"{summary['from']}–{summary['to']}")
    for column in ("participant", "current", "proposed", "difference", "files changed", "quarters changed", "Milestone 1"):
        table.add_column(column)
    for pid, row in participants.items():
        if row["difference"] == "0.00" and not row["files"] and not row["quarters"] and not row["milestone1"]:
            continue
        m1 = row["milestone1"]
        table.add_row(pid, row["current"], row["proposed"], row["difference"], str(len(row["files"])),
                      ", ".join(f"{q}: {v['current'] or '-'} → {v['proposed'] or '-'}" for q, v in row["quarters"].items()),
                      f"{m1['current']} → {m1['proposed']}" if m1 else "")
    console.print(table)
    for pid, row in participants.items():
        for file in row["files"]:
            console.print(f"{pid} file {file['submission_id']} ({file['quarter']}): {file['current']['verdict']} "
                          f"{', '.join(file['current']['reasons'])} → {file['proposed']['verdict']} "
                          f"{', '.join(file['proposed']['reasons'])}", soft_wrap=True)
    changed = sum(1 for row in participants.values() if row["difference"] != "0.00")
    console.print(f"{len(participants)} participants worked out, {changed} would be paid differently "
                  f"({summary['seconds']} s); nothing was recorded")


def _as_of(value: str | None) -> datetime | None:
    """An ISO timestamp; without an offset it is the plan's local time (America/Los_Angeles)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("--as-of must be an ISO 8601 date or timestamp, e.g. 2025-12-31T23:59:59-08:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=PLAN_ZONE)


def _orphan_tracking(names: list[str]) -> list[str]:
    """Tracking records in these services' stores that name an upstream event nobody published (issue 12 §1)."""
    from dsi_shared.tracking import orphan_tracking

    services = discover()

    def open_store(name: str) -> Any:
        spec = services.get(name)
        return open_read_only(spec) if spec is not None else None

    problems: list[str] = []
    for name in names:
        store = open_store(name)
        try:
            problems += orphan_tracking(store, open_store, {n: spec.contract for n, spec in services.items()})
        finally:
            store.close()
    return problems


def _store_kept(name: str) -> bool:
    """Whether this deployment keeps a store for the service: `<SERVICE>_STORE` set, or `make run`'s SQLite file."""
    return env_name(name, "STORE") in os.environ or (var_dir() / f"{name}.db").exists()


def _read_model_differences(names: list[str]) -> list[str]:
    """Each read model of these services rebuilt from the log in a scratch database and compared with the live
    tables: the first differing row of a table is named by its aggregate id, never by its content."""
    from dsi_shared.projections import compare_with_rebuild, dispose

    problems: list[str] = []
    for name, spec in discover().items():
        if name not in names or not spec.projections:
            continue
        application = open_read_only(spec)
        try:
            for projection in spec.projections:
                found = compare_with_rebuild(application, projection)
                problems += [f"{name}: read model {found.projection} ({d.table}) differs from its rebuild at "
                             f"position {found.position}: {d.what}" for d in found.differences]
        finally:
            dispose(application)
            application.close()
    return problems


@audit_app.command("replay")
def audit_replay(
    as_of: Annotated[str | None, typer.Option("--as-of", help="rebuild as things stood at this time (ISO 8601; "
                                                              "without an offset: plan time)")] = None,
    service: Annotated[list[str] | None, typer.Option(help="only these services (payments re-derives from "
                                                           "milestones only when both are replayed)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Rebuild every aggregate of every service from its store (as of a time, if given), re-derive payouts from
    the milestones achieved, and compare with the payments ledger; exit 1 naming any difference."""
    from rich.progress import Progress

    moment = _as_of(as_of)
    specs = {name: spec for name, spec in discover().items() if spec.audit is not None and (not service or name in service)}
    if service and (unknown := set(service) - set(specs)):
        raise typer.BadParameter(f"unknown service(s): {', '.join(sorted(unknown))}")

    def upstream(name: str) -> Iterator[IncomingEvent]:
        """Another service's published events, read from its store: what re-derivations start from."""
        from dsi_shared.service import published_events

        spec = discover()[name]
        store = open_read_only(spec)
        try:
            yield from published_events(store, spec.contract, moment)
        finally:
            store.close()

    context = AuditContext(as_of=moment, upstream=upstream)
    reports: dict[str, AuditReport] = {}
    started = time.monotonic()
    with Progress(console=console, transient=True, disable=as_json) as progress:
        for name, spec in specs.items():
            assert spec.audit is not None
            application = open_read_only(spec)
            try:
                task = progress.add_task(f"replaying {name}", total=application.recorder.max_notification_id() or 0)
                context.progress = lambda t=task: progress.advance(t)
                reports[name] = spec.audit(application, context)
            finally:
                application.close()
    # read models of services without an audit of their own (the console's, built from the streams) too, where kept
    modelled = [name for name in discover() if name in specs or (not service and _store_kept(name))]
    orphans = _orphan_tracking(list(specs)) + _read_model_differences(modelled)
    seconds = time.monotonic() - started
    participants: dict[str, dict[str, str]] = {}
    for report in reports.values():
        for pid, columns in report.rows.items():
            participants.setdefault(pid, {}).update(columns)
    problems = [problem for report in reports.values() for problem in report.problems] + orphans
    if as_json:
        print(json.dumps({"as_of": moment.isoformat() if moment else None, "seconds": round(seconds, 2),
                          "services": {n: {"aggregates": r.aggregates, "events": r.events} for n, r in reports.items()},
                          "participants": participants, "problems": problems}, indent=2))
    else:
        title = f"Replayed participants as of {moment.isoformat()}" if moment else "Replayed participants"
        table = Table(title=title)
        for column in ("participant", "name", "agreements", "Milestone 1", "quarters", "total paid", "remaining"):
            table.add_column(column)
        for pid, c in sorted(participants.items(), key=lambda item: item[1].get("name", "")):
            table.add_row(pid, c.get("name", "?"), c.get("agreements", "-"), c.get("milestone1", "not yet"),
                          c.get("quarters", "-"), c.get("total_paid", "0.00"), c.get("remaining", "-"))
        console.print(table)
        for name, report in reports.items():
            console.print(f"{name}: {report.aggregates} aggregates rebuilt from {report.events} events")
        for problem in problems:
            console.print(f"[red]DIFFERENCE[/red] {problem}")
        verdict = f"[red]{len(problems)} difference(s)[/red]" if problems else "[green]every rebuilt ledger agrees[/green]"
        console.print(verdict, f"({seconds:.1f} s)")
    raise typer.Exit(1 if problems else 0)


async def _checkpoints(services: list[str]) -> dict[str, list[Any]]:
    """Every published checkpoint of each service, from JetStream."""
    from dsi_shared.sealer import read_checkpoints

    async def read(js: Any, naming: Any) -> dict[str, list[Any]]:
        return {name: await read_checkpoints(js, naming, name) for name in services}

    return await on_bus(read)


@audit_app.command("verify")
def audit_verify(
    service: Annotated[list[str] | None, typer.Option(help="only these services (default: all)")] = None,
    offline: Annotated[bool, typer.Option(help="skip the checkpoints on NATS (a log rewritten with its chain "
                                                  "then goes unnoticed)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Recompute every store's hash chain from its events; name any altered, deleted, inserted or reordered event
    and any checkpoint the log no longer matches."""
    from rich.progress import Progress

    from dsi_shared.chain import HashChain, Verification

    specs = {name: spec for name, spec in discover().items() if not service or name in service}
    if service and (unknown := set(service) - set(specs)):
        raise typer.BadParameter(f"unknown service(s): {', '.join(sorted(unknown))}")
    checkpoints: dict[str, list[Any]] = {name: [] for name in specs}
    reachable = True
    if not offline:
        from dsi_shared.bus import BusUnreachable

        try:
            checkpoints = asyncio.run(_checkpoints(list(specs)))
        except Exception as exc:  # noqa: BLE001 - any failure to reach NATS is reported, not raised
            reachable = False
            why = str(exc) if isinstance(exc, BusUnreachable) else f"NATS unreachable ({type(exc).__name__})"
            errors.print(f"[red]checkpoints not read: {why}; the stores' chains are verified without them (exit 1). "
                         "Pass --offline to verify without the checkpoints on purpose.[/red]", soft_wrap=True)
    reports: list[Verification] = []
    started = time.monotonic()
    with Progress(console=console, transient=True, disable=as_json) as progress:
        for name, spec in specs.items():
            application = open_read_only(spec)
            try:
                task = progress.add_task(f"verifying {name}", total=application.recorder.max_notification_id() or 0)
                report = HashChain(application).verify(checkpoints[name], progress=lambda t=task: progress.advance(t))
                report.service = name
                reports.append(report)
            finally:
                application.close()
    seconds = time.monotonic() - started
    events = sum(r.events for r in reports)
    failed = any(not r.intact for r in reports) or not reachable
    if as_json:
        print(json.dumps({"intact": not failed, "checkpoints_read": reachable and not offline, "seconds": round(seconds, 2),
                          "services": [{"service": r.service, "events": r.events, "sealed_head": r.sealed_head,
                                        "unsealed": r.unsealed, "checkpoints": r.checkpoints, "problems": r.problems}
                                       for r in reports]}, indent=2))
    else:
        table = Table(title="Hash chains")
        for column in ("service", "events", "sealed up to", "not yet sealed", "checkpoints", "verdict"):
            table.add_column(column)
        for r in reports:
            table.add_row(r.service, f"{r.events:,}", str(r.sealed_head), str(r.unsealed), str(r.checkpoints),
                          "[green]intact[/green]" if r.intact else f"[red]{len(r.problems)} problem(s)[/red]")
        console.print(table)
        for r in reports:
            for problem in r.problems:
                console.print(f"[red]TAMPERED[/red] {r.service}: {problem}", soft_wrap=True)
        console.print(f"{events:,} events in {seconds:.1f} s ({events / max(seconds, 1e-9):,.0f} events/s)"
                      + ("; checkpoints not checked (--offline)" if offline else ""))
    raise typer.Exit(1 if failed else 0)
