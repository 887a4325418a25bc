"""The QIP pages beyond the list (issue 15 §2: "requirements with on-time status per entity, deliveries with their
manifest, totals and withheld-by-reason counts, file downloads, a member's accounting of disclosures"), for program
staff and auditors alike: every page here only reads, so no write control exists on them.

Files are proxied from qip-share under the user's own token and streamed chunk by chunk, never held whole: a
delivery's NDJSON can be large and holds PHI. A member is looked up by CIN from a search box; the CIN is checked
before it is sent, and never logged (the console's HTTP client logs no request lines)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from dsi_shared.members import CIN
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from console import reads
from console.web import Console, Refused

READERS = ("program-staff", "auditor")
RESOURCE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")  # a FHIR resource type, as a delivery names its files


def on_time_status(requirement: dict[str, Any], entities: list[dict[str, Any]], today: date) -> list[dict[str, Any]]:
    """Per entity, where the requirement stands: its first delivery on time or late (by the due date), or not
    delivered yet, and overdue once the due date has passed. Entities not participating are listed only when they
    were delivered to."""
    delivered: dict[str, dict[str, Any]] = requirement.get("entities", {})
    due = date.fromisoformat(requirement["due_date"])
    rows = []
    for entity in sorted(entities, key=lambda e: e["name"].lower()):
        done = delivered.get(entity["id"])
        if done is None and not entity.get("participating", True):
            continue
        if done is None:
            status = "overdue" if today > due else "not delivered yet"
        else:
            status = {True: "on time", False: "late"}.get(done["on_time"], "delivered (no due date)")
        rows.append({"entity": entity["name"], "entity_id": entity["id"], "status": status,
                     "delivered_at": done["delivered_at"] if done else None,
                     "first_delivery": done["first_delivery"] if done else None,
                     "deliveries": done["deliveries"] if done else 0})
    return rows


def install(app: FastAPI, console: Console) -> None:
    @app.get("/qip/deliveries/{delivery_id}", response_class=HTMLResponse)
    async def delivery(request: Request, delivery_id: str) -> Response:
        session = console.session(request, *READERS)
        shown = await reads.delivery(console.up, session.token, delivery_id)
        if shown is None:
            raise Refused(404, "No such delivery.")
        return console.page(request, "qip_delivery.html", d=shown)

    @app.get("/qip/deliveries/{delivery_id}/manifest.json")
    async def manifest(request: Request, delivery_id: str) -> Response:
        session = console.session(request, *READERS)
        return await download(console, session.token, delivery_id, "manifest", "manifest.json")

    @app.get("/qip/deliveries/{delivery_id}/files/{resource_type}.ndjson")
    async def output(request: Request, delivery_id: str, resource_type: str) -> Response:
        session = console.session(request, *READERS)
        if not RESOURCE.match(resource_type):
            raise Refused(404, "No such file.")
        return await download(console, session.token, delivery_id, f"files/{resource_type}.ndjson",
                              f"{resource_type}.ndjson")

    @app.get("/qip/disclosures", response_class=HTMLResponse)
    async def disclosures(request: Request, member: str = "") -> Response:
        """The accounting of disclosures of the member with this CIN (45 CFR 164.528's fields)."""
        session = console.session(request, *READERS)
        cin = member.strip().upper()
        if not cin:
            return console.page(request, "qip_disclosures.html", cin=None, found=None, error=None)
        if not CIN.match(cin):
            return console.page(request, "qip_disclosures.html", 422, cin=None, found=None,
                                error="That is not a CIN: 8 digits, then a letter.")
        found = await reads.disclosures(console.up, session.token, cin)
        return console.page(request, "qip_disclosures.html", cin=cin, found=found, error=None)


async def download(console: Console, token: str, delivery_id: str, path: str, name: str) -> StreamingResponse:
    """One of a delivery's files, streamed from qip-share as it arrives (its length and hash header passed on)."""
    if not reads.UUID_TEXT.match(delivery_id):
        raise Refused(404, "No such delivery.")
    upstream = await console.up.stream("qip-share", f"/deliveries/{delivery_id}/{path}", token)
    passed = {"etag"} if "content-encoding" in upstream.headers else {"etag", "content-length"}  # bytes as decoded
    headers = {k: v for k, v in upstream.headers.items() if k in passed}
    headers["Content-Disposition"] = f'attachment; filename="qip-delivery-{delivery_id[:8]}-{name}"'
    return StreamingResponse(upstream.aiter_bytes(), media_type=upstream.headers.get("content-type"), headers=headers,
                             background=BackgroundTask(upstream.aclose))
