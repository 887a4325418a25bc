"""qip-share HTTP: feeds in (streamed, stored once), legal bases and requirements, deliveries out, disclosures.

A delivery runs in the background (FHIR Bulk Data's asynchronous pattern): `POST /deliveries` answers 202 with
`Content-Location: /deliveries/{id}`, which answers 202 while it runs and 200 with the manifest when recorded
(`?wait=true` waits instead). Paths carry CINs only as route parameters, which never reach logs or span names."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from dsi_shared.errors import NotFound, Unprocessable
from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth
from dsi_shared.members import CIN
from dsi_shared.projections import current
from dsi_shared.projections_query import CURSOR, LIMIT, bodies, page, sort_query
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from qip_share import responses as out
from qip_share.application import QipShare, Reproduction
from qip_share.feeds import FEED_KINDS
from qip_share.ledger import Delivery, Disclosure, FeedFile, Requirement
from qip_share.projections import DELIVERIES, PROJECTION

log = logging.getLogger(__name__)
CIN_PATH = Path(pattern=CIN.pattern, description="the member's Medi-Cal CIN")


class LegalBasisForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    basis: str = Field(min_length=2, max_length=80, description="a basis the sensitivity policy names, e.g. part2_consent")
    start: date
    end: date | None = None
    reference: str = Field(min_length=1, max_length=200, description="where the consent/authorization is kept")


class RequirementForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=2, max_length=60, pattern=r"^[A-Za-z0-9._-]+$")
    title: str = Field(min_length=3, max_length=300)
    feed_kinds: list[str] = Field(default=[], description="the feed kinds the state names (default: all)")
    value_set_urls: list[str] = Field(default=[], description="the value sets it names (default: all current)")
    period_start: date
    period_end: date
    due_date: date
    source: str = Field(default="", max_length=300, description="e.g. the state's letter and its date")
    data_window_start: date | None = Field(None, description=(
        "first day of the data window (a measure's lookback, e.g. 9 years before the period for colorectal cancer "
        "screening); default: the delivery's period start"))
    data_window_end: date | None = Field(None, description="last day of the data window; default: the period end")


class DeliveryForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_id: UUID
    requirement: str = Field(min_length=2, max_length=60)
    period_start: date | None = None
    period_end: date | None = None


def feed_view(feed: FeedFile) -> dict[str, Any]:
    return {"kind": feed.kind, "sha256": feed.sha256, "size": feed.size, "rows": feed.rows, "accepted": feed.accepted,
            "rejected": feed.rejected, "rejects_by_reason": feed.rejects_by_reason, "rejects": feed.rejects,
            "rejects_listed": len(feed.rejects), "ignored_columns": feed.ignored_columns,
            "file_problem": feed.file_problem, "received_at": feed.received_at.isoformat(),
            "received_by": feed.received_by}


def requirement_view(requirement: Requirement, deliveries: list[Delivery]) -> dict[str, Any]:
    """The requirement and, per entity, its first delivery for it and whether that was on time (by the due date)."""
    status: dict[str, dict[str, Any]] = {}
    for d in sorted((d for d in deliveries if d.requirement == requirement.code), key=lambda d: d.transaction_time):
        entry = status.setdefault(str(d.entity_id), {"entity": d.entity_name, "first_delivery": str(d.id),
                                                     "delivered_at": d.transaction_time.isoformat(),
                                                     "on_time": d.on_time, "deliveries": 0})
        entry["deliveries"] += 1
    return {"code": requirement.code, "title": requirement.title, "feed_kinds": requirement.feed_kinds,
            "value_set_urls": requirement.value_set_urls, "period_start": requirement.period_start.isoformat(),
            "period_end": requirement.period_end.isoformat(), "due_date": requirement.due_date.isoformat(),
            "data_window_start": requirement.data_window_start.isoformat() if requirement.data_window_start else None,
            "data_window_end": requirement.data_window_end.isoformat() if requirement.data_window_end else None,
            "source": requirement.source, "entities": status}


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return to_jsonable({
        "id": str(delivery.id), "status": "complete" if delivery.disclosures_recorded is not None else "recording",
        "entity_id": str(delivery.entity_id), "entity": delivery.entity_name, "recipients": delivery.recipients,
        "requirement": delivery.requirement, "period_start": delivery.period_start, "period_end": delivery.period_end,
        "transaction_time": delivery.transaction_time, "position": delivery.position, "due_date": delivery.due_date,
        "on_time": delivery.on_time, "value_sets": delivery.value_sets, "policy_version": delivery.policy_version,
        "purpose": delivery.purpose, "legal_basis": delivery.legal_basis, "feeds": delivery.feeds,
        "files": delivery.files, "manifest": delivery.manifest, "totals": delivery.totals, "members": delivery.members,
        "requested_by": delivery.requested_by, "rules_version": delivery.rules_version,
        "data_window": {"start": delivery.data_window_start, "end": delivery.data_window_end}
        if delivery.data_window_start is not None else None})


def disclosure_view(d: Disclosure) -> dict[str, Any]:
    return to_jsonable({
        "delivery_id": str(d.delivery_id), "date": d.disclosed_at,
        "recipients": [{k: r[k] for k in ("name", "address", "role", "legal_basis") if k in r} for r in d.recipients],
        "description": "records from " + ", ".join(k.replace("_", " ") for k in d.categories) if d.categories
        else "no records (all withheld)", "purpose": d.purpose, "legal_basis": d.legal_basis,
        "period_start": d.period_start, "period_end": d.period_end, "categories": d.categories,
        "value_sets": d.value_sets, "records": d.records, "withheld": d.withheld, "files": d.files})


def reproduction_view(r: Reproduction) -> dict[str, Any]:
    return {"delivery_id": str(r.delivery.id), "matches": not r.problems, "files": r.files,
            "manifest": {"recorded": r.delivery.manifest["sha256"], "rebuilt": r.manifest_sha256},
            "problems": r.problems}


def feed_routes(router: APIRouter, app: QipShare, auth: Auth) -> None:
    staff = auth.require_actor("program-staff")
    readers = auth.require("program-staff", "auditor")

    @router.post("/feeds/{kind}", status_code=201, response_model=out.FeedIngested,
                 responses={200: {"description": "the same file was ingested before", "model": out.FeedIngested}})
    async def ingest(kind: str, request: Request, response: Response, actor: str = Depends(staff)) -> dict[str, Any]:
        """A feed file (CSV, columns per kind: see `qip_share.feeds`), streamed into the store as it arrives."""
        if kind not in FEED_KINDS:
            raise NotFound(f"no feed kind {kind!r}; known: {', '.join(FEED_KINDS)}")
        writer = app.files.writer("text/csv")
        async for part in request.stream():
            if part:
                await asyncio.to_thread(writer.write, part)
        stored = await asyncio.to_thread(writer.close)
        feed, new = await asyncio.to_thread(app.ingest_feed, kind, stored, actor, datetime.now(UTC))
        if feed.file_problem is not None:
            raise Unprocessable(f"feed file {feed.sha256[:12]} recorded but unusable: {feed.file_problem}")
        if not new:
            response.status_code = 200
        return {**feed_view(feed), "already_ingested": not new}

    @router.get("/feeds", dependencies=[Depends(readers)], response_model=out.FeedList)
    def feeds() -> dict[str, Any]:
        found = app.feeds()
        return {"count": len(found), "feeds": [{k: v for k, v in feed_view(f).items() if k != "rejects"} for f in found]}

    @router.get("/feeds/{kind}/{sha256}", dependencies=[Depends(readers)], response_model=out.FeedView)
    def feed(kind: str, sha256: str) -> dict[str, Any]:
        return feed_view(app.get(FeedFile.create_id(kind, sha256), FeedFile, "feed file"))

    @router.get("/feed-kinds", dependencies=[Depends(readers)], response_model=dict[str, out.FeedKindView])
    def feed_kinds() -> dict[str, Any]:
        return {name: {"description": k.description, "resource": k.resource, "required": k.required,
                       "optional": k.optional, "codes": k.codes, "key": k.key} for name, k in FEED_KINDS.items()}

    @router.post("/members/{cin}/legal-bases", status_code=201, response_model=out.LegalBases)
    def legal_basis(form: LegalBasisForm, cin: str = CIN_PATH, actor: str = Depends(staff)) -> dict[str, Any]:
        member = app.record_legal_basis(cin, form.basis, form.start, form.end, form.reference, actor, datetime.now(UTC))
        return {"legal_bases": to_jsonable(member.legal_bases)}

    @router.post("/requirements", status_code=201, response_model=out.RequirementView,
                 responses={200: {"description": "the same requirement was defined before", "model": out.RequirementView}})
    def define(form: RequirementForm, response: Response, _: str = Depends(staff)) -> dict[str, Any]:
        requirement, new = app.define_requirement(form.code, form.title, form.feed_kinds, form.value_set_urls,
                                                  form.period_start, form.period_end, form.due_date, form.source,
                                                  form.data_window_start, form.data_window_end)
        if not new:
            response.status_code = 200
        return requirement_view(requirement, [])

    @router.get("/requirements", dependencies=[Depends(readers)], response_model=out.RequirementList)
    def requirements() -> dict[str, Any]:
        deliveries = app.deliveries()
        return {"requirements": [requirement_view(r, deliveries) for r in app.requirements()]}

    @router.get("/requirements/{code}", dependencies=[Depends(readers)], response_model=out.RequirementView)
    def requirement(code: str) -> dict[str, Any]:
        return requirement_view(app.requirement(code), app.deliveries())


def delivery_routes(router: APIRouter, app: QipShare, auth: Auth) -> None:
    staff = auth.require_actor("program-staff")
    readers = auth.require("program-staff", "auditor")
    running: dict[UUID, asyncio.Future[Delivery]] = {}
    failed: dict[UUID, str] = {}

    def in_progress(delivery_id: UUID) -> JSONResponse:
        return JSONResponse({"id": str(delivery_id), "status": "in-progress"}, status_code=202,
                            headers={"Content-Location": f"/deliveries/{delivery_id}", "Retry-After": "5"})

    @router.post("/deliveries", status_code=201, response_model=out.DeliveryView, responses={
        200: {"description": "recorded before: the same delivery", "model": out.DeliveryView},
        202: {"description": "recording: ask again at Content-Location", "model": out.DeliveryPending}})
    async def deliver(form: DeliveryForm, wait: bool = Query(False, description="answer when recorded, not 202"),
                      actor: str = Depends(staff)) -> dict[str, Any] | JSONResponse:
        request = await asyncio.to_thread(app.delivery_request, form.entity_id, form.requirement, form.period_start,
                                          form.period_end)
        known = await asyncio.to_thread(app.find, request.delivery_id, Delivery)
        if known is not None:
            return JSONResponse(delivery_view(known), status_code=200)
        job = running.get(request.delivery_id)
        if job is None:
            failed.pop(request.delivery_id, None)
            job = asyncio.ensure_future(asyncio.to_thread(app.deliver, request, actor, datetime.now(UTC)))
            running[request.delivery_id] = job
            job.add_done_callback(lambda done: _finished(request.delivery_id, done))
        if not wait:
            return in_progress(request.delivery_id)
        return delivery_view(await asyncio.shield(job))

    def _finished(delivery_id: UUID, job: asyncio.Future[Delivery]) -> None:
        running.pop(delivery_id, None)
        if not job.cancelled() and job.exception() is not None:
            failed[delivery_id] = type(job.exception()).__name__
            log.error("delivery %s failed: %s", delivery_id, failed[delivery_id])

    @router.get("/deliveries", dependencies=[Depends(readers)], response_model=out.DeliveryList)
    def deliveries(entity_id: UUID | None = None, requirement: str | None = Query(None, max_length=100),
                   sort: str = sort_query(("recorded", "transaction_time"), "recorded"),
                   limit: int = LIMIT, cursor: str | None = CURSOR) -> dict[str, Any]:
        """Deliveries from the read model (without feeds and recipients): `recorded` = the order recorded in."""
        table = DELIVERIES.c
        where = [table.entity_id == str(entity_id)] if entity_id else []
        where += [table.requirement == requirement] if requirement else []
        found = page(current(app, PROJECTION).engine, DELIVERIES, where, sort,
                     {"recorded": table.seq, "transaction_time": table.transaction_time}, limit, cursor)
        return {"deliveries": bodies(found), "count": found.count, "next_cursor": found.next_cursor}

    @router.get("/deliveries/{delivery_id}", dependencies=[Depends(readers)], response_model=out.DeliveryView,
                responses={202: {"description": "recording: ask again later", "model": out.DeliveryPending}})
    def delivery(delivery_id: UUID) -> dict[str, Any] | JSONResponse:
        if delivery_id in running:
            return in_progress(delivery_id)
        if delivery_id in failed:
            raise Unprocessable(f"the delivery failed ({failed[delivery_id]}); ask for it again")
        return delivery_view(app.delivery(delivery_id))

    @router.get("/deliveries/{delivery_id}/manifest", dependencies=[Depends(readers)], response_class=Response,
                responses={200: {"description": "the Bulk Data manifest, byte for byte as recorded",
                                 "content": {"application/json": {"schema": {"type": "object"}}}}})
    def manifest(delivery_id: UUID) -> Response:
        found = app.delivery(delivery_id)
        return Response(app.files.read(found.manifest["sha256"]), media_type="application/json",
                        headers={"ETag": f'"{found.manifest["sha256"]}"'})

    @router.get("/deliveries/{delivery_id}/files/{resource_type}.ndjson", dependencies=[Depends(readers)],
                response_class=StreamingResponse, responses=out.media("application/fhir+ndjson", "one resource per line"))
    def output(delivery_id: UUID, resource_type: str) -> StreamingResponse:
        found = app.delivery(delivery_id)
        entry = next((f for f in found.files if f["type"] == resource_type), None)
        if entry is None:
            raise NotFound("the delivery has no file of that resource type")
        chunks: Iterator[bytes] = app.files.chunks(entry["sha256"])
        return StreamingResponse(chunks, media_type="application/fhir+ndjson",
                                 headers={"ETag": f'"{entry["sha256"]}"', "Content-Length": str(entry["size"])})

    @router.get("/deliveries/{delivery_id}/reproduction", dependencies=[Depends(readers)], response_model=out.Reproduction)
    async def reproduction(delivery_id: UUID) -> dict[str, Any]:
        return reproduction_view(await asyncio.to_thread(app.reproduce, delivery_id))

    @router.get("/members/{cin}/disclosures", dependencies=[Depends(readers)], response_model=out.Disclosures)
    def disclosures(cin: str = CIN_PATH) -> dict[str, Any]:
        found = app.disclosures_of(cin)
        return {"count": len(found), "disclosures": [disclosure_view(d) for d in found]}
