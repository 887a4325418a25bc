"""Everything the console shows, read in one place: the participants list, its filters, names and the three charts
from the console's own read models (`readmodel`, built from the public event streams); the rest from the services'
HTTP APIs (what the public events do not carry: a participant's whole page, a quarter's evaluations to decide on).
Each function returns plain dicts for the templates."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dsi_shared.plantime import plan_day
from dsi_shared.service import ServiceRuntime

from console import readmodel
from console.chart import Coverage
from console.readmodel import Filters
from console.upstream import SERVICES, Upstream, UpstreamError

UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEAD_LETTERS_SHOWN = 200  # per service on the operations page (the newest; `dsi ops dead-letters list` shows all)
SETTLE_SECONDS = 2.0  # how long a list waits for the console's consumers to apply what their streams hold


async def participants(runtime: ServiceRuntime, filters: Filters) -> list[dict[str, Any]]:
    """The registered participants within `filters`, by legal name, from the console's read model."""
    await settled(runtime)
    return list(await asyncio.to_thread(readmodel.read, runtime.app, readmodel.participants, filters))


async def participant(up: Upstream, token: str, pid: str) -> dict[str, Any] | None:
    """A participant's whole page: enrollment (with its history), milestones, submissions and payments."""
    if not UUID_TEXT.match(pid):
        return None
    shown = await up.get("enrollment", f"/participants/{pid}", token)
    if shown is None:
        return None
    progress, files, statement = await asyncio.gather(
        up.get("milestones", f"/participants/{pid}/milestones", token),
        up.get("submissions", f"/participants/{pid}/submissions", token),
        up.get("payments", f"/participants/{pid}/payments", token))
    return {"participant": shown, "progress": progress or {"milestones": [], "evaluations": [], "findings": []},
            "submissions": (files or {}).get("submissions", []), "statement": statement}


async def rules(up: Upstream, token: str) -> list[dict[str, Any]]:
    """The published rules versions, latest first: effective from, reason, published at, and whether each is a
    correction (effective before the day it was published)."""
    found = await up.get("enrollment", "/program-rules", token)
    versions = list(reversed((found or {}).get("effective", [])))
    for v in versions:  # shown in UTC, to the minute
        at = v["published_at"] and datetime.fromisoformat(v["published_at"]).astimezone(UTC)
        v["published"] = f"{at:%Y-%m-%d %H:%M} UTC" if at else None
    return versions


async def corrections_reaching(up: Upstream, token: str, shown: dict[str, Any]) -> list[dict[str, Any]]:
    """The corrections published after the participant was registered: each reached it ("a correction reaches
    every participant already enrolled"), and the what-if shows what it changed."""
    history = shown["participant"].get("history") or []
    if not history:
        return []
    registered = datetime.fromisoformat(history[0]["recorded_at"])
    return [v for v in await rules(up, token)
            if v["correction"] and v["published_at"] and datetime.fromisoformat(v["published_at"]) > registered]


async def names(runtime: ServiceRuntime) -> dict[str, str]:
    """Each participant's legal name, by id (the what-if report names participants by id only)."""
    await settled(runtime)
    return dict(await asyncio.to_thread(readmodel.read, runtime.app, readmodel.names))


async def own_participants(up: Upstream, token: str, binding: str) -> frozenset[str]:
    """The participants a provider token is bound to: its participant id, or every application under its NPI."""
    if UUID_TEXT.match(binding):
        return frozenset({binding}) if await up.get("enrollment", f"/participants/{binding}", token) else frozenset()
    listed = await up.get("enrollment", "/participants", token)
    return frozenset(p["id"] for p in (listed or {}).get("participants", []) if binding in {p["npi"], p["tin"]})


async def quarter(up: Upstream, token: str, name: str) -> dict[str, Any] | None:
    return await up.get("milestones", f"/quarters/{name}", token)


async def evaluations(up: Upstream, token: str, quarter_name: str = "", state: str = "") -> list[dict[str, Any]]:
    found = await up.get("milestones", "/evaluations", token, quarter=quarter_name, state=state)
    return found["evaluations"] if found else []


async def export(up: Upstream, token: str, quarter_name: str) -> tuple[bytes, str]:
    from console.upstream import checked

    response = checked("payments", await up.send("GET", "payments", "/payments/export", token,
                                                 params={"quarter": quarter_name}))
    return response.content, response.headers.get("etag", "")


async def health(up: Upstream, token: str) -> list[dict[str, Any]]:
    """Each service's liveness, readiness (with its checks and consumer lag), as its probes answer now."""

    async def one(name: str) -> dict[str, Any]:
        row: dict[str, Any] = {"service": name, "alive": False, "ready": False, "checks": {}, "lag": None}
        try:
            row["alive"] = (await up.send("GET", name, "/healthz", None)).status_code == 200
            ready = await up.send("GET", name, "/readyz", None)
            body = ready.json()
            row.update(ready=ready.status_code == 200, checks=body.get("checks", {}), lag=body.get("lag"))
        except (UpstreamError, ValueError):
            pass
        return row

    return list(await asyncio.gather(*(one(name) for name in SERVICES)))


async def audit(up: Upstream, token: str) -> list[dict[str, Any]]:
    """Each store's hash chain verified against its checkpoints, and its replay's own findings, run now."""

    async def one(name: str) -> dict[str, Any]:
        row: dict[str, Any] = {"service": name, "verify": None, "replay": None, "error": None}
        try:
            row["verify"] = await up.get(name, "/audit/verify", token)
            row["replay"] = await up.get(name, "/audit/replay", token)  # None: this service has no replay
        except UpstreamError as exc:
            row["error"] = f"{exc.status} {exc.detail}".strip()
        return row

    return list(await asyncio.gather(*(one(name) for name in SERVICES)))


async def qip(up: Upstream, token: str) -> dict[str, Any]:
    from console.qip import on_time_status

    entities, deliveries, requirements = await asyncio.gather(
        up.get("qip-share", "/entities", token), up.get("qip-share", "/deliveries", token),
        up.get("qip-share", "/requirements", token))
    listed = (entities or {}).get("entities", [])
    return {"entities": listed, "deliveries": (deliveries or {}).get("deliveries", []),
            "requirements": [(r, on_time_status(r, listed, plan_day(datetime.now(UTC))))
                             for r in (requirements or {}).get("requirements", [])]}


async def delivery(up: Upstream, token: str, delivery_id: str) -> dict[str, Any] | None:
    """A QIP delivery as qip-share recorded it, with its Bulk Data manifest (None: no such delivery)."""
    if not UUID_TEXT.match(delivery_id):
        return None
    shown = await up.get("qip-share", f"/deliveries/{delivery_id}", token)
    if shown is None or shown.get("status") != "complete":
        return shown  # None, or still recording (qip-share answers 202 with its status)
    manifest = await up.get("qip-share", f"/deliveries/{delivery_id}/manifest", token)
    return {**shown, "manifest_document": manifest or {}}


async def disclosures(up: Upstream, token: str, cin: str) -> list[dict[str, Any]]:
    """A member's accounting of disclosures (every QIP delivery that carried or withheld a record about them)."""
    found = await up.get("qip-share", f"/members/{cin}/disclosures", token)
    return list((found or {}).get("disclosures", []))


async def paid_by_type(runtime: ServiceRuntime, settle: bool = True) -> dict[str, dict[str, Decimal]]:
    """Dollars paid per quarter, by provider type (the chart on the charts page), from the console's read model
    (`settle=False`: the page already waited for it)."""
    if settle:
        await settled(runtime)
    return dict(await asyncio.to_thread(readmodel.read, runtime.app, readmodel.paid_by_type))


async def settled(runtime: ServiceRuntime, within: float = SETTLE_SECONDS) -> None:
    """Wait, at most `within` seconds, until the console's consumers have applied every message their streams hold
    now: a list read right after a command (and its event) shows it, as the services' own lists do. Without NATS, or
    past the bound, the read model answers as it stands (its lag is in `/readyz`)."""
    consumers = [c for c in runtime.consumers if c.js is not None]
    deadline = asyncio.get_running_loop().time() + within
    while consumers:
        try:
            lags = await asyncio.wait_for(asyncio.gather(*(c.lag_now() for c in consumers)), within)
        except Exception:  # noqa: BLE001 - the bus cannot say: answer from the read model as it stands
            return
        if not any(lags) or asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.05)


async def dead_letters(up: Upstream, token: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Each service's newest dead letters (when, whose consumer, which subject, why, its trace id: never a body),
    newest first, from its `GET /dead-letters` (its first page of the newest); and the services that could not
    answer now."""

    async def one(name: str) -> list[dict[str, Any]] | str:
        try:
            found = await up.get(name, "/dead-letters", token, sort="-at", limit=DEAD_LETTERS_SHOWN) or {}
            return list(found.get("dead_letters", []))
        except UpstreamError as exc:
            return f"{name} ({exc.status})"

    found = await asyncio.gather(*(one(name) for name in SERVICES))
    letters = [d for answer in found if isinstance(answer, list) for d in answer]
    return sorted(letters, key=lambda d: d["at"], reverse=True), [a for a in found if isinstance(a, str)]


def trace_link(template: str | None, trace_id: str | None) -> str | None:
    """The trace viewer's page for a trace id (`DSI_TRACE_URL`, e.g. `http://jaeger:16686/trace/{trace_id}`), or
    None when no viewer is configured or there is no trace id."""
    if not template or not trace_id or "{trace_id}" not in template:
        return None
    return template.replace("{trace_id}", trace_id)


async def files_by_week(runtime: ServiceRuntime) -> dict[str, dict[str, int]]:
    """Files credited and rejected (by reason) per week, from the console's read model of submissions' verdicts
    (`dsi.submissions.file-judged`); call after `settled`."""
    return dict(await asyncio.to_thread(readmodel.read, runtime.app, readmodel.files_by_week,
                                        projections=(readmodel.FILES_PROJECTION, readmodel.PROJECTION)))


async def coverage(runtime: ServiceRuntime, quarter_name: str) -> list[Coverage]:
    """Each PCP's coverage against its threshold in a quarter, from the console's read model of milestones' coverage
    evaluations (`dsi.milestones.coverage-evaluated`), the PCPs named from its participants; call after `settled`."""
    return list(await asyncio.to_thread(readmodel.read, runtime.app, readmodel.coverage, quarter_name,
                                        projections=(readmodel.QUARTERS_PROJECTION, readmodel.PROJECTION)))


async def latest_quarter(runtime: ServiceRuntime) -> str | None:
    """The latest quarter any evaluation is of (the coverage chart's default): the latest close that recorded one;
    call after `settled`."""
    found = await asyncio.to_thread(readmodel.read, runtime.app, readmodel.latest_quarter,
                                    projections=(readmodel.QUARTERS_PROJECTION,))
    return str(found) if found else None
