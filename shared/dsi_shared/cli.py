"""`dsi`: run the services, drive a demo, audit the stores. Services are found through entry points."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dsi_shared.config import Settings, var_dir
from dsi_shared.natsperms import OUTSIDE_USERS
from dsi_shared.natsserver import NatsServer
from dsi_shared.service import AuditFacts, AuditReport, ServiceRuntime, discover

app = typer.Typer(help="Data Sharing Incentive and QIP data sharing: services, demo and audit.", no_args_is_help=True)
audit_app = typer.Typer(help="Rebuild and check what was paid and disclosed.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
quarter_app = typer.Typer(help="Quarter closes (the milestones service).", no_args_is_help=True)
app.add_typer(quarter_app, name="quarter")
enrollment_app = typer.Typer(help="Enrollment: participants and their agreements.", no_args_is_help=True)
app.add_typer(enrollment_app, name="enrollment")
rules_app = typer.Typer(help="Program rules: preview a version before publishing it.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
ops_app = typer.Typer(help="Operations: dead letters, key rotation.", no_args_is_help=True)
app.add_typer(ops_app, name="ops")
docs_app = typer.Typer(help="Interface documents: the events each service publishes.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")
dead_letters_app = typer.Typer(help="Messages a consumer gave up on, with the reason.", no_args_is_help=True)
ops_app.add_typer(dead_letters_app, name="dead-letters")
console = Console()
errors = Console(stderr=True)  # what went wrong, apart from the output (a --json answer stays parseable)
RUN_FILE = "run.json"
T = TypeVar("T")


@app.command()
def serve(name: str) -> None:
    """Run one service (HTTP, relay, consumers) in the foreground."""
    from dsi_shared import httpserver

    specs = discover()
    if name not in specs:
        raise typer.BadParameter(f"unknown service {name!r}; known: {', '.join(specs)}")
    runtime = ServiceRuntime(specs[name], exit_on_crash=True)
    host = os.environ.get("DSI_HTTP_HOST", "127.0.0.1")
    # No access log (request paths carry member ids); timeouts and connection limits: `dsi_shared.httpserver`.
    httpserver.serve(runtime.http, host, runtime.settings.port)


def _tokens() -> str:
    if raw := os.environ.get("DSI_TOKENS"):
        return raw
    roles = ("program-staff", "auditor", "ops", "hie")
    scopes = {"hie": "@*"}  # the dev HIE may submit for any facility, on the server's clock (no +backdate)
    return ",".join(f"dev-{role}-{secrets.token_urlsafe(12)}:{role}{scopes.get(role, '')}" for role in roles)


def _write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write a file only its owner may read or write (0600 from the first byte: it holds tokens or keys), whatever
    the umask; an existing file is replaced, or with `exclusive` left alone (FileExistsError)."""
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


def _payload_key(var: Path) -> str:
    """`DSI_PAYLOAD_KEY`, else the development key kept in var/ (created once, 0600: stored payloads must stay
    readable, and only by their owner)."""
    if key := os.environ.get("DSI_PAYLOAD_KEY"):
        return key
    path = var / "payload.key"
    try:
        _write_private(path, base64.b64encode(secrets.token_bytes(32)).decode(), exclusive=True)
    except FileExistsError:
        path.chmod(0o600)  # one made before keys were created private
    return path.read_text().strip()


RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds before restarting a service that died, by attempt
STABLE_SECONDS = 60.0  # a service that ran this long before dying starts again from the first backoff step


class Supervisor:
    """`dsi up`'s service processes: one that dies is restarted after a growing delay (RESTART_BACKOFF), and
    said so; the others keep running."""

    def __init__(self, names: list[str], spawn: Callable[[str], subprocess.Popen[bytes]], var: Path) -> None:
        self.spawn, self.var = spawn, var
        self.children = {name: spawn(name) for name in names}
        self.started = dict.fromkeys(names, time.monotonic())
        self.failures = dict.fromkeys(names, 0)
        self.restart_at: dict[str, float] = {}

    def check(self) -> None:
        now = time.monotonic()
        for name, child in list(self.children.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self.children[name], self.started[name] = self.spawn(name), now
                    console.print(f"[yellow]{name} restarted (pid {self.children[name].pid})[/yellow]")
                continue
            if child.poll() is None:
                continue
            if now - self.started[name] >= STABLE_SECONDS:
                self.failures[name] = 0
            delay = RESTART_BACKOFF[min(self.failures[name], len(RESTART_BACKOFF) - 1)]
            self.failures[name] += 1
            self.restart_at[name] = now + delay
            console.print(f"[red]{name} exited with {child.returncode}; restarting it in {delay:.0f} s "
                          f"(restart {self.failures[name]}); the other services keep running; see "
                          f"{self.var / (name + '.log')}[/red]", soft_wrap=True)

    def stop(self) -> None:
        running = [child for child in self.children.values() if child.poll() is None]
        for child in running:
            child.terminate()
        for child in running:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


@app.command()
def up() -> None:
    """Start the embedded NATS (unless NATS_URL is set) and every service; a service that dies is restarted (with
    backoff) while the others run on; Ctrl-C stops all of them."""
    var = var_dir().resolve()
    var.mkdir(parents=True, exist_ok=True)
    nats: NatsServer | None = None
    nats_url = os.environ.get("NATS_URL")
    specs = discover()
    nats_users: dict[str, str] = {}  # user → password, for the embedded server only
    if not nats_url:
        nats, nats_users = _embedded_nats(var, specs)
        nats_url = nats.url
    env = {**os.environ, "NATS_URL": nats_url, "DSI_TOKENS": _tokens(), "DSI_VAR_DIR": str(var),
           "DSI_PAYLOAD_KEY": _payload_key(var)}
    urls = {name: f"http://127.0.0.1:{Settings(name, spec.default_port).port}" for name, spec in specs.items()}

    mllp, hie_client = _dev_mllp_tls(var) if not os.environ.get("DSI_MLLP_TLS_CERT") else ({}, None)

    def spawn(name: str) -> subprocess.Popen[bytes]:
        own = {"NATS_USER": name, "NATS_PASSWORD": nats_users[name], "DSI_MANAGE_STREAMS": "false"} if nats_users else {}
        if name == "submissions":
            own.update(mllp)
        with open(var / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "dsi_shared.cli", "serve", name],
                                    env={**env, **own}, stdout=log, stderr=log)

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor = Supervisor(list(specs), spawn, var)
    try:
        outside = {user: nats_users[user] for user in OUTSIDE_USERS if user in nats_users}
        _write_private(var / RUN_FILE, json.dumps({"nats_url": nats_url, "tokens": env["DSI_TOKENS"], "urls": urls,
                                                   "bus_prefix": env.get("DSI_BUS_PREFIX", ""),
                                                   "nats_users": outside}, indent=2))
        _wait_ready(urls, supervisor, lambda: stopping)
        if not stopping:
            console.print("[bold]DSI is running[/bold] (Ctrl-C stops everything)")
            for name, url in urls.items():
                store = Settings(name, specs[name].default_port).store
                console.print(f"  {name:12} {url}  (OpenAPI {url}/docs, store {store}, log {var / (name + '.log')})",
                              soft_wrap=True)
            console.print(f"NATS: {nats_url}" + (" (embedded, JetStream in var/nats)" if nats else ""))
            if hie_client:
                console.print(f"MLLP: mutual TLS; the development HIE's client certificate {hie_client}.crt and .key, "
                              f"trusting {mllp['DSI_MLLP_TLS_CLIENT_CA']}", soft_wrap=True)
            console.print("Tokens (Authorization: Bearer <token>):")
            for item in env["DSI_TOKENS"].split(","):
                token, _, role = item.rpartition(":")
                console.print(f"  {role:14} {token}", soft_wrap=True)
            console.print("Try: make demo")
        while not stopping:
            supervisor.check()
            time.sleep(0.3)
    finally:
        supervisor.stop()
        if nats:
            nats.stop()
        console.print("stopped")


def _dev_mllp_tls(var: Path) -> tuple[dict[str, str], str]:
    """`make run`'s MLLP speaks mutual TLS as production does: a development CA (var/tls), the listener's
    certificate, and one client certificate for a development HIE bound to any sender."""
    from dsi_shared.devpki import DEV_HIE, dev_pki

    pki = dev_pki(var / "tls")
    return {"DSI_MLLP_TLS_CERT": str(pki.server_cert), "DSI_MLLP_TLS_KEY": str(pki.server_key),
            "DSI_MLLP_TLS_CLIENT_CA": str(pki.ca), "DSI_MLLP_PEERS": os.environ.get("DSI_MLLP_PEERS", f"{DEV_HIE}@*")}, \
        str(pki.client_cert.with_suffix(""))


def _embedded_nats(var: Path, specs: dict[str, Any]) -> tuple[NatsServer, dict[str, str]]:
    """The embedded NATS with the same least-privilege users as compose (issue 12 §2), each with a password made
    for this run; the streams declared by `admin`, as at deploy time. Returns the server and the passwords."""
    from dsi_shared.bus import Naming, connect_briefly, ensure_streams
    from dsi_shared.consumer import by_stream
    from dsi_shared.natsperms import accounts_config, grants

    prefix = os.environ.get("DSI_BUS_PREFIX", "")
    users = grants({name: list(by_stream(spec.subscriptions)) for name, spec in specs.items()})
    passwords = {user: secrets.token_urlsafe(24) for user in users}
    server = NatsServer(var / "nats", log_file=var / "nats-server.log",
                        accounts=accounts_config(users, passwords, prefix)).start()

    async def declare() -> None:
        nc = await connect_briefly(server.url, "dsi-up", "admin", passwords["admin"])
        try:
            await ensure_streams(nc.jetstream(), Naming(prefix), strict=True)
        finally:
            await nc.close()

    asyncio.run(declare())
    return server, passwords


def _wait_ready(urls: dict[str, str], supervisor: Supervisor, stopping: Callable[[], bool], timeout: float = 60) -> None:
    """Until every service answers /readyz 200 (a service dying meanwhile is restarted, not fatal)."""
    import httpx

    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending and time.monotonic() < deadline and not stopping():
        supervisor.check()
        for name, url in list(pending.items()):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    if pending and not stopping():
        console.print(f"[red]not ready after {timeout:.0f}s: {', '.join(pending)}[/red]")


@app.command()
def demo() -> None:
    """Drive the thin flow against a running `dsi up`: register, sign LOA/DSA by HTTP and HIE by NATS
    (and DSA twice), accept the three in one staff action, then show the single $10,000 Milestone 1 payment."""
    from dsi_shared.demo import run_demo

    run_file = var_dir() / RUN_FILE
    if not run_file.exists():
        console.print("[red]nothing is running: start it with `make run` first[/red]")
        raise typer.Exit(1)
    from dsi_shared.bus import BusUnreachable

    try:
        raise typer.Exit(asyncio.run(run_demo(json.loads(run_file.read_text()), console)))
    except BusUnreachable as exc:
        errors.print(f"[red]{exc}: is `make run` still running?[/red]", soft_wrap=True)
        raise typer.Exit(2) from None


def _running(service: str, role: str) -> tuple[str | None, str | None]:
    """The URL of a service and a token for a role from `make run`'s run file, when there is one."""
    run_file = var_dir() / RUN_FILE
    if not run_file.exists():
        return None, None
    run = json.loads(run_file.read_text())
    tokens = {r: t for t, _, r in (item.rpartition(":") for item in run["tokens"].split(","))}
    return run["urls"].get(service), tokens.get(role)


@quarter_app.command("close")
def quarter_close(
    quarter: Annotated[str, typer.Argument(help="the data-capture quarter, e.g. 2025Q4")],
    url: Annotated[str | None, typer.Option(help="milestones service URL (default: the running `make run`)")] = None,
    token: Annotated[str | None, typer.Option(envvar="DSI_TOKEN", help="a program-staff bearer token")] = None,
) -> None:
    """Close a quarter: evaluate every participant whose data sharing has started (once; again is no change)."""
    import httpx

    default_url, default_token = _running("milestones", "program-staff")
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


@enrollment_app.command("import-dsa-list")
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

    default_url, default_token = _running("enrollment", "program-staff")
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
    from dsi_shared.plantime import Quarter, plan_day
    from dsi_shared.rulebook import InvalidRulesDocument, RulesDocument, parse_document

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
        last = Quarter.parse(to_quarter) if to_quarter else Quarter.of(plan_day(datetime.now().astimezone())).previous()
        first = Quarter.parse(from_quarter) if from_quarter else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    facts: dict[str, Any] = {"to": last}
    started = time.monotonic()
    specs = sorted((s for s in discover().values() if s.what_if is not None), key=lambda s: s.audit_order)
    for spec in specs:
        assert spec.what_if is not None
        application = spec.application(Settings(spec.name, spec.default_port).store)
        try:
            if "from" not in facts:
                book = application.rulebook()  # type: ignore[attr-defined]
                if published is not None:  # the book without that version is "current"; the book as it is, proposed
                    proposed = book.version(published)
                    if proposed is None:
                        raise typer.BadParameter(f"no published version {published!r}")
                    facts["current"], facts["proposed_book"] = book.without(published), book
                assert proposed is not None
                facts["proposed"] = proposed
                earliest = min((v.effective_from for v in book.versions), default=proposed.effective_from)
                facts["from"] = first or Quarter.of(min(earliest, proposed.effective_from))
            with console.status(f"working out {spec.name} under both rule books") if not as_json else nullcontext():
                spec.what_if(application, facts)
        finally:
            application.close()
    assert proposed is not None
    participants: dict[str, dict[str, Any]] = facts.get("participants", {})
    summary = {"proposed_version": proposed.version, "effective_from": proposed.effective_from.isoformat(),
               "from": str(facts.get("from")), "to": str(last), "seconds": round(time.monotonic() - started, 2),
               "participants": participants}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    verb = "changed" if published else "were published"
    table = Table(title=f"What if {proposed.version} (effective {proposed.effective_from}) {verb}: "
                        f"{summary['from']}–{last}")
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
    from dsi_shared.plantime import PLAN_ZONE

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
        return spec.application(Settings(name, spec.default_port).store) if spec is not None else None

    problems: list[str] = []
    for name in names:
        store = open_store(name)
        try:
            problems += orphan_tracking(store, open_store, {n: spec.contract for n, spec in services.items()})
        finally:
            store.close()
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
    facts: AuditFacts = {"as_of": moment} if moment else {}

    def upstream(name: str) -> Iterator[Any]:
        """Another service's published events, read from its store: what re-derivations start from."""
        from dsi_shared.service import published_events

        spec = discover()[name]
        store = spec.application(Settings(name, spec.default_port).store)
        try:
            yield from published_events(store, spec.contract, facts)
        finally:
            store.close()

    facts["upstream"] = upstream
    reports: dict[str, AuditReport] = {}
    started = time.monotonic()
    with Progress(console=console, transient=True, disable=as_json) as progress:
        for name, spec in specs.items():
            assert spec.audit is not None
            application = spec.application(Settings(name, spec.default_port).store)
            try:
                task = progress.add_task(f"replaying {name}", total=application.recorder.max_notification_id() or 0)
                facts["progress"] = lambda t=task: progress.advance(t)
                reports[name] = spec.audit(application, facts)
            finally:
                application.close()
    facts.pop("progress", None)
    facts.pop("upstream", None)
    orphans = _orphan_tracking(list(specs))
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


async def _on_bus(work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `work(jetstream, naming)` against the bus: NATS_URL / DSI_BUS_PREFIX, else `make run`'s. NATS not
    reachable within seconds raises BusUnreachable (it never waits for ever)."""
    from dsi_shared.bus import Naming, connect_briefly

    run_file = var_dir() / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    url = os.environ.get("NATS_URL") or run.get("nats_url") or "nats://127.0.0.1:4222"
    naming = Naming(os.environ.get("DSI_BUS_PREFIX", run.get("bus_prefix", "")))
    user, password = os.environ.get("NATS_USER"), os.environ.get("NATS_PASSWORD")
    if user is None and "ops" in run.get("nats_users", {}):  # `make run`'s NATS: operators' commands run as `ops`
        user, password = "ops", run["nats_users"]["ops"]
    nc = await connect_briefly(url, "dsi-cli", user=user, password=password)
    try:
        return await work(nc.jetstream(), naming)
    finally:
        await nc.close()


def _run_on_bus(work: Callable[[Any, Any], Awaitable[T]], hint: str = "") -> T:
    """`_on_bus` for a command: NATS unreachable → a clear message (with `hint`) and exit code 2, within seconds."""
    from dsi_shared.bus import BusUnreachable

    try:
        return asyncio.run(_on_bus(work))
    except BusUnreachable as exc:
        errors.print(f"[red]{exc}: start it, or point NATS_URL at it{hint}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None


async def _checkpoints(services: list[str]) -> dict[str, list[Any]]:
    """Every published checkpoint of each service, from JetStream."""
    from dsi_shared.sealer import read_checkpoints

    async def read(js: Any, naming: Any) -> dict[str, list[Any]]:
        return {name: await read_checkpoints(js, naming, name) for name in services}

    return await _on_bus(read)


@dead_letters_app.command("list")
def dead_letters_list(
    service: Annotated[str | None, typer.Option(help="only this service's dead letters")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every dead letter: when, whose consumer, which subject, how many deliveries, why (never the body)."""
    from dsi_shared.deadletters import list_dead_letters

    letters = _run_on_bus(lambda js, naming: list_dead_letters(js, naming, service),
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
        replayed = _run_on_bus(replay, " (dead letters are kept on JetStream only)")
    except NoSuchDeadLetter as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for d in replayed:
        console.print(f"replayed {d.sequence}: {d.original_subject} for {d.consumer} (was: {d.reason})", soft_wrap=True)
    console.print(f"{len(replayed)} dead letter(s) replayed")


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
            application = spec.application(Settings(name, spec.default_port).store)
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


@ops_app.command("streams")
def ops_streams() -> None:
    """Declare (or update) every JetStream stream, as the NATS `admin` user at deploy time (NATS_URL, NATS_USER,
    NATS_PASSWORD). Service users may not create, purge or delete streams (issue 12 §2)."""
    from dsi_shared.bus import STREAMS, ensure_streams

    async def declare(js: Any, naming: Any) -> list[str]:
        await ensure_streams(js, naming, strict=True)
        return [naming.stream(name) for name in STREAMS]

    declared = _run_on_bus(declare)
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


def _qip_store() -> Any:
    """The qip-share store, opened directly (read-only use), as `audit replay` opens every store."""
    spec = discover().get("qip-share")
    if spec is None:
        console.print("[red]the qip-share service is not installed[/red]")
        raise typer.Exit(2)
    return spec.application(Settings("qip-share", spec.default_port).store)


@audit_app.command("reproduce")
def audit_reproduce(
    delivery_id: Annotated[str, typer.Argument(help="the delivery's id (GET /deliveries lists them)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Rebuild a QIP delivery from the event log as of its time and the stored feeds; prove every hash matches."""
    from uuid import UUID

    from dsi_shared.errors import NotFound

    qip = _qip_store()
    try:
        started = time.monotonic()
        reproduction = qip.reproduce(UUID(delivery_id))
        seconds = time.monotonic() - started
    except (ValueError, NotFound):
        console.print("[red]no such delivery[/red]")
        raise typer.Exit(2) from None
    finally:
        qip.close()
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


@audit_app.command("disclosures")
def audit_disclosures(
    member: Annotated[str, typer.Option("--member", help="the member's Medi-Cal CIN")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """A member's accounting of disclosures (45 CFR 164.528): every QIP delivery that carried their records."""
    from dsi_shared.members import CIN

    if not CIN.match(member.strip().upper()):
        console.print("[red]--member is not a Medi-Cal CIN (8 digits then a letter)[/red]")
        raise typer.Exit(2)
    qip = _qip_store()
    try:
        found = qip.disclosures_of(member.strip().upper())
    finally:
        qip.close()
    entries = [{"date": d.disclosed_at.isoformat(), "recipients": [r["name"] for r in d.recipients],
                "addresses": [r.get("address", "") for r in d.recipients], "purpose": d.purpose,
                "legal_basis": d.legal_basis, "period": f"{d.period_start} to {d.period_end}", "categories": d.categories,
                "records": d.records, "withheld": d.withheld, "delivery_id": str(d.delivery_id)} for d in found]
    if as_json:
        print(json.dumps({"disclosures": entries}, indent=2))
        return
    table = Table(title=f"Accounting of disclosures: {len(entries)} disclosure(s)")
    for column in ("date", "recipients", "description", "purpose", "records", "withheld"):
        table.add_column(column)
    for e in entries:
        table.add_row(e["date"], "; ".join(f"{n}, {a}" for n, a in zip(e["recipients"], e["addresses"], strict=True)),
                      f"{', '.join(e['categories']) or 'nothing'} ({e['period']})", e["purpose"],
                      ", ".join(f"{k} {v}" for k, v in e["records"].items()) or "0",
                      ", ".join(f"{k} {v}" for k, v in e["withheld"].items()) or "-")
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
