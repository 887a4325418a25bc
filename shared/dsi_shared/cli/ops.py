"""`dsi ops`: dead letters (list, replay), stream declaration at deploy time, re-encryption after a key rotation."""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Annotated, Any

import typer
from rich.table import Table

from dsi_shared.cli.common import console, run_on_bus
from dsi_shared.config import Settings
from dsi_shared.service import discover

ops_app = typer.Typer(help="Operations: dead letters, key rotation.", no_args_is_help=True)
dead_letters_app = typer.Typer(help="Messages a consumer gave up on, with the reason.", no_args_is_help=True)
ops_app.add_typer(dead_letters_app, name="dead-letters")


@dead_letters_app.command("list")
def dead_letters_list(
    service: Annotated[str | None, typer.Option(help="only this service's dead letters")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every dead letter: when, whose consumer, which subject, how many deliveries, why (never the body)."""
    from dsi_shared.deadletters import list_dead_letters

    letters = run_on_bus(lambda js, naming: list_dead_letters(js, naming, service),
                          " (dead letters are kept on JetStream only)")
    if as_json:
        print(json.dumps([{**vars(d), "at": d.at.isoformat()} for d in letters], indent=2))
        return
    table = Table(title=f"Dead letters: {len(letters)} ({sum(not d.replayed for d in letters)} not replayed)")
    for column in ("seq", "at", "service", "subject", "consumer", "deliveries", "reason", "replayed"):
        table.add_column(column)
    for d in letters:
        table.add_row(str(d.sequence), d.at.isoformat(timespec="seconds"), d.service, d.original_subject, d.consumer,
                      str(d.deliveries), d.reason, "yes" if d.replayed else "")
    console.print(table)


@dead_letters_app.command("replay")
def dead_letters_replay(
    sequence: Annotated[list[int] | None, typer.Argument(help="dead-letter sequence numbers (from `list`)")] = None,
    all_pending: Annotated[bool, typer.Option("--all", help="every dead letter not yet replayed")] = False,
    service: Annotated[str | None, typer.Option(help="with --all: only this service's")] = None,
) -> None:
    """Republish dead letters on their original subjects, once the cause is fixed; each replay is recorded."""
    from dsi_shared.deadletters import NoSuchDeadLetter, list_dead_letters, replay_dead_letter

    if not sequence and not all_pending:
        raise typer.BadParameter("name dead-letter sequence numbers or pass --all")
    operator = os.environ.get("USER", "operator")

    async def replay(js: Any, naming: Any) -> list[Any]:
        wanted = list(sequence or [])
        if all_pending:
            wanted += [d.sequence for d in await list_dead_letters(js, naming, service) if not d.replayed]
        return [await replay_dead_letter(js, naming, seq, operator) for seq in sorted(set(wanted))]

    try:
        replayed = run_on_bus(replay, " (dead letters are kept on JetStream only)")
    except NoSuchDeadLetter as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for d in replayed:
        console.print(f"replayed {d.sequence}: {d.original_subject} for {d.consumer} (was: {d.reason})", soft_wrap=True)
    console.print(f"{len(replayed)} dead letter(s) replayed")


@ops_app.command("streams")
def ops_streams() -> None:
    """Declare (or update) every JetStream stream, as the NATS `admin` user at deploy time (NATS_URL, NATS_USER,
    NATS_PASSWORD). Service users may not create, purge or delete streams (issue 12 §2)."""
    from dsi_shared.bus import STREAMS, ensure_streams

    async def declare(js: Any, naming: Any) -> list[str]:
        await ensure_streams(js, naming, strict=True)
        return [naming.stream(name) for name in STREAMS]

    declared = run_on_bus(declare)
    console.print(f"{len(declared)} streams declared: {', '.join(declared)}")


@ops_app.command("reencrypt")
def ops_reencrypt(service: Annotated[list[str] | None, typer.Option(help="only these services")] = None) -> None:
    """After a key rotation (new DSI_PAYLOAD_KEY, the old one in DSI_PAYLOAD_OLD_KEYS): re-encrypt every stored
    payload, feed and delivery chunk under the new key, so the old key can be retired."""
    from dsi_shared.blobs import BlobStore
    from dsi_shared.cipher import PayloadCipher

    cipher = PayloadCipher()
    for name, spec in discover().items():
        if service and name not in service:
            continue
        application = spec.application(Settings(name, spec.default_port).store)
        try:
            count = BlobStore(application).reencrypt(cipher)
        finally:
            application.close()
        console.print(f"{name}: {count} blob(s) re-encrypted under key {cipher.key_id}")


@ops_app.command("rebuild-projections")
def ops_rebuild_projections(
    name: Annotated[list[str] | None, typer.Option("--name", help="only these read models (or every read model of "
                                                                   "these services)")] = None,
) -> None:
    """Drop read models and build them again from their stores' event logs (progress shown). A running service
    carries on from the rebuilt position: every event still counts once."""
    from rich.progress import Progress

    from dsi_shared.projections import dispose, runner

    chosen = [(service, spec, projection) for service, spec in discover().items() for projection in spec.projections
              if not name or projection.name in name or service in name]
    known = {p.name for s in discover().values() for p in s.projections} | set(discover())
    if name and (unknown := set(name) - known):
        raise typer.BadParameter(f"no read model or service named {', '.join(sorted(unknown))}")
    with Progress(console=console) as progress:
        for service, spec, projection in chosen:
            application = spec.application(Settings(service, spec.default_port).store)
            try:
                total = application.recorder.max_notification_id() or 0
                task = progress.add_task(f"{service}: {projection.name}", total=total)
                events = runner(application, projection).rebuild(partial(progress.advance, task))
                progress.update(task, completed=total)
            finally:
                dispose(application)
                application.close()
            console.print(f"{service}: read model {projection.name} rebuilt from {events} event(s)")
