"""Enrollment HTTP API (thin: validate, call the application, shape the answer)."""

from __future__ import annotations

import asyncio
import os
from datetime import date
from typing import Any, Literal
from uuid import UUID

from dsi_shared.errors import PermanentError
from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth, problem, read_body
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from enrollment import rosters
from enrollment.application import Enrollment
from enrollment.domain import AGREEMENTS, DuplicateParticipant, Participant
from enrollment.members import PCP, QIP, Member

MAX_UPLOAD_BYTES = int(os.environ.get("DSI_MAX_UPLOAD_BYTES", str(40 * 1024 * 1024)))


class InterestForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    legal_name: str = Field(min_length=1, max_length=300)
    npi: str | None = Field(default=None, pattern=r"^[0-9]{10}$")
    tin: str | None = Field(default=None, pattern=r"^[0-9]{9}$")
    provider_type: str = Field(min_length=1, max_length=100)
    counties: list[str] = Field(default_factory=list, max_length=100)
    ehr_product: str | None = None
    is_hospital: bool = False
    facility_kind: str | None = Field(default=None, max_length=100, description="e.g. snf, ltc, clinic, ltach")
    umbrella_group: str | None = None
    manages_ehr: bool = True
    sending_facilities: list[str] = Field(default_factory=list, max_length=100)
    contact_email: str = Field(min_length=3, max_length=320)
    submitted_on: date

    @model_validator(mode="after")
    def npi_or_tin(self) -> InterestForm:
        if not (self.npi or self.tin):
            raise ValueError("an interest form needs an NPI or a TIN")
        return self


class AgreementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agreement: Literal["LOA", "DSA", "HIE"]
    signed_at: AwareDatetime
    document_id: str = Field(min_length=1, max_length=200)


class EarlyAgreementIn(AgreementIn):
    """A signature reported before (or without knowing) the participant id: matched on NPI/TIN."""

    npi: str | None = Field(default=None, pattern=r"^[0-9]{10}$")
    tin: str | None = Field(default=None, pattern=r"^[0-9]{9}$")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_id: str = Field(min_length=1, max_length=200)
    decision: Literal["accepted", "rejected"]
    reason: str | None = Field(default=None, max_length=1000)


class DepartureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effective_on: date
    reason: str = Field(min_length=1, max_length=1000)


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)
    rules: dict[str, Any]


def participant_view(app: Enrollment, participant: Participant, with_history: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": str(participant.id),
        "legal_name": participant.legal_name,
        "npi": participant.npi,
        "tin": participant.tin,
        "provider_type": participant.provider_type,
        "counties": participant.counties,
        "ehr_product": participant.ehr_product,
        "umbrella_group": participant.umbrella_group,
        "sending_facilities": participant.sending_facilities,
        "submitted_on": participant.submitted_on.isoformat(),
        "eligible": participant.eligible,
        "reasons": participant.reasons,
        "rule_version": participant.rule_version,
        "schedule": participant.schedule,
        "status": participant.status,
        "departure": to_jsonable(participant.departure),
        "agreements": {kind: _signature(participant.agreement(kind)) for kind in AGREEMENTS},
        "signatures": to_jsonable(participant.signatures),
        "milestone1": _milestone(participant.milestones.get("M1")),
    }
    if with_history:
        view["history"] = [{**h, "recorded_at": h["recorded_at"].isoformat()} for h in app.history(participant.id)]
    return view


def _signature(signature: dict[str, Any] | None) -> dict[str, Any] | None:
    if signature is None:
        return None
    return {"signed_at": signature["signed_at"].isoformat(), "document_id": signature["document_id"],
            "channel": signature["channel"], "review": signature["review"]}


def _milestone(milestone: dict[str, Any] | None) -> dict[str, Any]:
    if milestone is None:
        return {"achieved": False}
    return {"achieved": milestone["outcome"] == "achieved", **to_jsonable(milestone)}


def member_view(member: Member, asked_alias: str | None, on: date) -> dict[str, Any]:
    span = member.eligibility_on(on)
    return {
        "member_id": member.cin,
        "requested_frozen_id": asked_alias,
        "frozen_ids": member.aliases,
        "on": on.isoformat(),
        "member_on_date": span is not None,
        "eligibility": to_jsonable(span),
        "attributed_participant": member.attributed_on(PCP, on),
        "assigned_qip_entity": member.attributed_on(QIP, on),
        "spans": to_jsonable(sorted(member.spans.values(), key=lambda s: s["start"])),
        "attributions": to_jsonable(member.attributions),
    }


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise rosters.UnreadableFile("the file is not UTF-8 text") from None


def routes(app: Enrollment, auth: Auth) -> APIRouter:
    router = APIRouter()
    staff = auth.require("program-staff")
    readers = auth.require("program-staff", "auditor")

    # -- participants -------------------------------------------------------------------------------------------
    @router.post("/participants", status_code=status.HTTP_201_CREATED, dependencies=[Depends(staff)], tags=["participants"],
                 responses={409: {"description": "a participant with this NPI/TIN exists"}})
    def register(form: InterestForm) -> Any:
        try:
            participant_id = app.register_participant(form.model_dump())
        except DuplicateParticipant as exc:
            return problem(409, "Conflict", str(exc), participant_id=str(exc.participant_id))
        return participant_view(app, app.participant(participant_id))

    @router.get("/participants", dependencies=[Depends(readers)], tags=["participants"])
    def list_participants(provider_type: str | None = None, county: str | None = None,
                          status_: str | None = Query(default=None, alias="status")) -> dict[str, Any]:
        found = app.participants(provider_type, county, status_)
        return {"participants": [participant_view(app, p) for p in sorted(found, key=lambda p: p.legal_name)],
                "count": len(found)}

    @router.get("/participants/{participant_id}", dependencies=[Depends(readers)], tags=["participants"])
    def show(participant_id: UUID) -> dict[str, Any]:
        return participant_view(app, app.participant(participant_id), with_history=True)

    @router.post("/participants/{participant_id}/agreements", dependencies=[Depends(staff)], tags=["agreements"],
                 responses={200: {"description": "the same signature was already recorded"},
                            201: {"description": "signature recorded"}})
    def sign(participant_id: UUID, body: AgreementIn, response: Response) -> dict[str, Any]:
        recorded = app.sign_agreement(participant_id, body.agreement, body.signed_at, body.document_id, "http")
        response.status_code = status.HTTP_201_CREATED if recorded else status.HTTP_200_OK
        return {**participant_view(app, app.participant(participant_id)), "recorded": recorded}

    @router.post("/agreements", dependencies=[Depends(staff)], status_code=status.HTTP_202_ACCEPTED, tags=["agreements"])
    def sign_early(body: EarlyAgreementIn) -> dict[str, Any]:
        """A signature matched on NPI/TIN: the DSA may arrive before the interest form and is kept until then."""
        if not (body.npi or body.tin):
            raise PermanentError("name the provider by npi or tin")
        owner, aggregates = app.sign_by_identity(body.npi, body.tin, body.agreement, body.signed_at, body.document_id,
                                                 "http")
        app.save(*aggregates)
        return {"participant_id": str(owner) if owner else None, "held_until_interest_form": owner is None}

    @router.post("/participants/{participant_id}/agreements/{agreement}/reviews", dependencies=[Depends(staff)],
                 tags=["agreements"])
    def review(participant_id: UUID, agreement: Literal["LOA", "DSA", "HIE"], body: ReviewIn) -> dict[str, Any]:
        changed = app.review_agreement(participant_id, agreement, body.document_id, body.decision, body.reason)
        return {**participant_view(app, app.participant(participant_id)), "changed": changed}

    @router.post("/participants/{participant_id}/withdrawal", dependencies=[Depends(staff)], tags=["participants"])
    def withdraw(participant_id: UUID, body: DepartureIn) -> dict[str, Any]:
        app.depart(participant_id, "withdrawn", body.effective_on, body.reason)
        return participant_view(app, app.participant(participant_id))

    @router.post("/participants/{participant_id}/termination", dependencies=[Depends(staff)], tags=["participants"])
    def terminate(participant_id: UUID, body: DepartureIn) -> dict[str, Any]:
        app.depart(participant_id, "terminated", body.effective_on, body.reason)
        return participant_view(app, app.participant(participant_id))

    # -- program rules --------------------------------------------------------------------------------------------
    @router.get("/program-rules", dependencies=[Depends(readers)], tags=["program rules"])
    def rules() -> dict[str, Any]:
        record = app.program_rules()
        return {"current": record.current.document, "versions": [v["version"] for v in record.versions]}

    @router.post("/program-rules", dependencies=[Depends(staff)], tags=["program rules"])
    def publish_rules(body: RulesIn, response: Response) -> Any:
        version, changed = app.publish_rules(body.rules, body.reason)
        response.status_code = status.HTTP_201_CREATED if changed else status.HTTP_200_OK
        return {"version": version, "changed": changed}

    # -- members and rosters -----------------------------------------------------------------------------------
    @router.get("/members/{member_id}", dependencies=[Depends(readers)], tags=["members"])
    def member(member_id: str, on: date | None = None) -> Any:
        found, alias = app.member(member_id)
        return member_view(found, alias, on or date.today())

    @router.post("/members/import", dependencies=[Depends(staff)], tags=["members"],
                 openapi_extra={"requestBody": {"content": {"text/csv": {}, "application/edi-x12": {}}}})
    async def import_members(request: Request, format_: Literal["csv", "834"] | None = Query(None, alias="format")) -> Any:
        data = await read_body(request, MAX_UPLOAD_BYTES)
        text = _text(data)
        kind = format_ or ("834" if text.lstrip().startswith("ISA") else "csv")
        parse = rosters.eligibility_834 if kind == "834" else rosters.eligibility_csv
        return await _import(app, "eligibility", kind, data, parse(text))

    @router.post("/attributions/import", dependencies=[Depends(staff)], tags=["members"],
                 openapi_extra={"requestBody": {"content": {"text/csv": {}, "application/fhir+json": {}}}})
    async def import_attributions(request: Request, kind: Literal["pcp", "qip"] = "pcp",
                                  format_: Literal["csv", "atr"] | None = Query(None, alias="format")) -> Any:
        data = await read_body(request, MAX_UPLOAD_BYTES)
        text = _text(data)
        fmt = format_ or ("atr" if text.lstrip().startswith("{") else "csv")
        rows = rosters.attribution_atr(text, kind) if fmt == "atr" else rosters.attribution_csv(text)
        return await _import(app, f"attribution-{kind}" if fmt == "atr" else "attribution", fmt, data, rows)

    return router


async def _import(app: Enrollment, kind: str, file_format: str, data: bytes, rows: Any) -> JSONResponse:
    # rows are parsed lazily in the worker thread; a file-level error (UnreadableFile → 422) surfaces before any write
    report, again = await asyncio.to_thread(app.import_roster, kind, file_format, data, rows)
    return JSONResponse({**report, "already_imported": again}, status_code=200)
