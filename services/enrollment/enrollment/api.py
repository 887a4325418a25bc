"""Enrollment HTTP API (thin: validate, call the application, shape the answer)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import sqlalchemy as sa
from dsi_shared.errors import NotFound, PermanentError
from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth, problem, read_body
from dsi_shared.identifiers import Email, Identifier, Npi, Tin
from dsi_shared.plantime import plan_day
from dsi_shared.projections import current
from dsi_shared.projections_query import CURSOR, LIMIT, cents, dollars_query, page, sort_query
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from enrollment import responses as out
from enrollment import rosters
from enrollment.application import Enrollment
from enrollment.domain import AGREEMENTS, PLAN_AGREEMENTS, DuplicateParticipant, Participant
from enrollment.dsa_list import parse_signatory_csv
from enrollment.members import PCP, QIP, Member
from enrollment.projections import COUNTIES, PARTICIPANTS, PROJECTION

STAFF_ACCEPTANCE = "accepted by program staff after review"
MAX_UPLOAD_BYTES = int(os.environ.get("DSI_MAX_UPLOAD_BYTES", str(40 * 1024 * 1024)))


class InterestForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    legal_name: str = Field(min_length=1, max_length=300)
    npi: Npi | None = Field(default=None, description="10 digits, the last its check digit")
    tin: Tin | None = None
    provider_type: str = Field(min_length=1, max_length=100)
    counties: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=100)
    ehr_product: str | None = Field(default=None, max_length=300)
    is_hospital: bool = False
    facility_kind: str | None = Field(default=None, max_length=100, description="e.g. snf, ltc, clinic, ltach")
    umbrella_group: str | None = Field(default=None, max_length=300)
    manages_ehr: bool = True
    sending_facilities: list[Identifier] = Field(default_factory=list, max_length=100)
    individual_npis: list[Npi] = Field(
        default_factory=list, max_length=1000,
        description="NPIs of the individual PCPs it manages (an umbrella group): attribution files may name them")
    contact_email: Email
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

    npi: Npi | None = None
    tin: Tin | None = None


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_id: str = Field(min_length=1, max_length=200)
    decision: Literal["accepted", "rejected"]
    reason: str | None = Field(default=None, max_length=1000)


class AcceptanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=1000)


class DueDateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    due_on: date = Field(description="the participant's own agreement (Milestone 1) due date")
    reason: str = Field(min_length=1, max_length=1000)


class SigningExtensionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: date = Field(description="plan agreements signed by this plan-local date are not flagged late")
    reason: str = Field(min_length=1, max_length=1000)


class DepartureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effective_on: date
    reason: str = Field(min_length=1, max_length=1000)


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)
    rules: dict[str, Any] = Field(description="the whole rules document (see GET /program-rules)")
    confirm_lowering: bool = Field(default=False, description="staff confirm a version that lowers signed terms")


def participant_view(app: Enrollment, participant: Participant, with_history: bool = False) -> dict[str, Any]:
    schedule = schedule_view(app, participant.provider_type)
    deadline = _signing_deadline(participant, schedule)
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
        "individual_npis": participant.individual_npis,
        "submitted_on": participant.submitted_on.isoformat(),
        "eligible": participant.eligible,
        "reasons": participant.reasons,
        "rule_version": participant.rule_version,
        "schedule": schedule,
        "cap_scope": schedule["cap_scope"] if schedule else None,
        "flags": participant.flags,
        "status": participant.status,
        "departure": to_jsonable(participant.departure),
        **_applications(app, participant),
        "agreements": {kind: _signature(participant.agreement_state(kind), deadline) for kind in AGREEMENTS},
        "agreements_accepted": all(participant.accepted(kind) for kind in AGREEMENTS),
        "agreement_due_date": _due_date(participant, schedule),
        "signing": _signing(participant, schedule, deadline),
        "signatures": to_jsonable(participant.signatures),
        "milestone1": _milestone(participant.milestones.get("M1")),
    }
    if with_history:
        view["history"] = [{**h, "recorded_at": h["recorded_at"].isoformat()} for h in app.history(participant.id)]
    return view


def _applications(app: Enrollment, participant: Participant) -> dict[str, Any]:
    """A1, applying again, shown both ways: the application this one follows and those that followed it; the
    organization's participations (one per provider type joined)."""
    applications = app.applications_under(participant)
    return {
        "previous_application": str(participant.previous_application) if participant.previous_application else None,
        "later_applications": [str(p.id) for p in applications if p.previous_application == participant.id],
        "organization_id": str(participant.organization_id) if participant.organization_id else None,
        "organization_participations": [str(p.id) for p in applications
                                        if p.organization == participant.organization and p.eligible],
    }


def _due_date(participant: Participant, schedule: dict[str, Any] | None) -> dict[str, Any]:
    """The participant's own due date when staff set one at LOA execution, else the type's Milestone 1 date."""
    if participant.due_date is not None:
        return {"due_on": participant.due_date["due_on"].isoformat(), "set_by_staff": True,
                "reason": participant.due_date["reason"]}
    return {"due_on": schedule["milestone1_by"] if schedule else None, "set_by_staff": False, "reason": None}


def _signing_deadline(participant: Participant, schedule: dict[str, Any] | None) -> date | None:
    """"Deadline to Sign Alliance Agreements" (the type's `sign_plan_agreements_by` in the rules in force), or
    the staff extension when later."""
    dates = [date.fromisoformat(schedule["sign_plan_agreements_by"])] if schedule else []
    if participant.signing_extension is not None:
        dates.append(participant.signing_extension["until"])
    return max(dates) if dates else None


def _signing(participant: Participant, schedule: dict[str, Any] | None, deadline: date | None) -> dict[str, Any]:
    """Plan agreements signed after the deadline are flagged for staff, never refused."""
    late = [{"agreement": s["agreement"], "document_id": s["document_id"], "signed_on": plan_day(s["signed_at"]).isoformat()}
            for s in participant.signatures if _late(s, deadline)]
    return {"sign_plan_agreements_by": schedule["sign_plan_agreements_by"] if schedule else None,
            "extension": to_jsonable(participant.signing_extension),
            "deadline": deadline.isoformat() if deadline else None, "late_signatures": late}


def _late(signature: dict[str, Any], deadline: date | None) -> bool:
    return (deadline is not None and signature["agreement"] in PLAN_AGREEMENTS
            and plan_day(signature["signed_at"]) > deadline)


def schedule_view(app: Enrollment, provider_type: str) -> dict[str, Any] | None:
    """The type's row in the version in force today: never a copy frozen at registration."""
    rules = app.rulebook().in_force(plan_day(datetime.now(UTC)))
    row = rules.provider_type(provider_type) if rules else None
    if rules is None or row is None:
        return None
    return {"rule_version": rules.version, "effective_from": rules.effective_from.isoformat(),
            **row.model_dump(mode="json"), "cap": str(rules.program.cap), "cap_scope": rules.program.cap_scope}


def _signature(signature: dict[str, Any] | None, deadline: date | None) -> dict[str, Any] | None:
    """One agreement: the signature that counts, `signed`, `status` (accepted, rejected, awaiting_review) and
    `late` (a plan agreement signed after the signing deadline). None when never signed."""
    if signature is None:
        return None
    return {"signed": signature["signed"], "status": signature["status"], "signed_at": signature["signed_at"].isoformat(),
            "document_id": signature["document_id"], "channel": signature["channel"],
            "review": to_jsonable(signature["review"]), "late": _late(signature, deadline)}


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
                 response_model=out.Participant, responses={
                     409: {"description": "a participant with this NPI/TIN exists"},
                     201: {"links": {"GetParticipant": {  # the id flows on (OpenAPI links; schemathesis follows them)
                         "operationRef": "#/paths/~1participants~1{participant_id}/get",
                         "parameters": {"participant_id": "$response.body#/id"}}}}})
    def register(form: InterestForm) -> Any:
        try:
            participant_id = app.register_participant(form.model_dump())
        except DuplicateParticipant as exc:
            return problem(409, "Conflict", str(exc), participant_id=str(exc.participant_id))
        return participant_view(app, app.participant(participant_id))

    @router.get("/participants", dependencies=[Depends(readers)], tags=["participants"], response_model=out.ParticipantList)
    def list_participants(provider_type: str | None = None, county: str | None = None,
                          status_: str | None = Query(default=None, alias="status"),
                          milestone1: str | None = Query(None, pattern="^(achieved|missed|pending)$"),
                          earned_min: Decimal | None = dollars_query("achieved, at least"),
                          earned_max: Decimal | None = dollars_query("achieved, at most"),
                          sort: str = sort_query(("legal_name", "registered", "submitted_on", "earned"), "legal_name"),
                          limit: int = LIMIT, cursor: str | None = CURSOR) -> dict[str, Any]:
        """Participants from the read model; each of the page rendered from its aggregate (its view depends on today)."""
        table = PARTICIPANTS.c
        where = [table.provider_type == provider_type] if provider_type else []
        where += [table.status == status_] if status_ else []
        where += [table.milestone1 == milestone1] if milestone1 else []
        where += [table.earned_cents >= cents(earned_min)] if earned_min is not None else []
        where += [table.earned_cents <= cents(earned_max)] if earned_max is not None else []
        if county:
            where.append(table.id.in_(sa.select(COUNTIES.c.id).where(COUNTIES.c.county == county.casefold())))
        found = page(current(app, PROJECTION).engine, PARTICIPANTS, where, sort,
                     {"legal_name": table.legal_name, "registered": table.seq, "submitted_on": table.submitted_on,
                      "earned": table.earned_cents}, limit, cursor)
        return {"participants": [participant_view(app, app.participant(UUID(row.id))) for row in found.rows],
                "count": found.count, "next_cursor": found.next_cursor}

    @router.get("/participants/{participant_id}", dependencies=[Depends(readers)], tags=["participants"],
                response_model=out.ParticipantDetail)
    def show(participant_id: UUID) -> dict[str, Any]:
        return participant_view(app, app.participant(participant_id), with_history=True)

    @router.post("/participants/{participant_id}/agreements", dependencies=[Depends(staff)], tags=["agreements"],
                 response_model=out.Signed,
                 responses={200: {"description": "the same signature was already recorded"},
                            201: {"description": "signature recorded", "model": out.Signed}})
    def sign(participant_id: UUID, body: AgreementIn, response: Response) -> dict[str, Any]:
        recorded = app.sign_agreement(participant_id, body.agreement, body.signed_at, body.document_id, "http")
        response.status_code = status.HTTP_201_CREATED if recorded else status.HTTP_200_OK
        return {**participant_view(app, app.participant(participant_id)), "recorded": recorded}

    @router.post("/agreements", dependencies=[Depends(staff)], status_code=status.HTTP_202_ACCEPTED, tags=["agreements"],
                 response_model=out.EarlySignature)
    def sign_early(body: EarlyAgreementIn) -> dict[str, Any]:
        """A signature matched on NPI/TIN: the DSA may arrive before the interest form and is kept until then."""
        if not (body.npi or body.tin):
            raise PermanentError("name the provider by npi or tin")
        owner = app.sign_by_identity_and_save(body.npi, body.tin, body.agreement, body.signed_at, body.document_id, "http")
        return {"participant_id": str(owner) if owner else None, "held_until_interest_form": owner is None}

    @router.post("/participants/{participant_id}/agreements/{agreement}/reviews", dependencies=[Depends(staff)],
                 tags=["agreements"], response_model=out.Changed)
    def review(participant_id: UUID, agreement: Literal["LOA", "DSA", "HIE"], body: ReviewIn) -> dict[str, Any]:
        changed = app.review_agreement(participant_id, agreement, body.document_id, body.decision, body.reason)
        return {**participant_view(app, app.participant(participant_id)), "changed": changed}

    @router.post("/participants/{participant_id}/agreements/acceptance", dependencies=[Depends(staff)],
                 tags=["agreements"], response_model=out.Accepted)
    def accept_all(participant_id: UUID, body: AcceptanceIn | None = None) -> dict[str, Any]:
        """Staff accept, after a look at them, every signed document not yet reviewed (one AgreementReviewed,
        decision accepted, each). Rejected and already accepted documents are left alone."""
        reason = (body.reason if body and body.reason and body.reason.strip() else None) or STAFF_ACCEPTANCE
        accepted = app.accept_agreements(participant_id, reason)
        return {**participant_view(app, app.participant(participant_id)), "accepted": accepted}

    @router.post("/participants/{participant_id}/agreement-due-date", dependencies=[Depends(staff)],
                 tags=["agreements"], response_model=out.Changed)
    def set_due_date(participant_id: UUID, body: DueDateIn) -> dict[str, Any]:
        """The participant's own agreement due date, set when the LOA is executed (default: the type's
        Milestone 1 date in the rules in force)."""
        changed = app.set_due_date(participant_id, body.due_on, body.reason)
        return {**participant_view(app, app.participant(participant_id)), "changed": changed}

    @router.post("/participants/{participant_id}/signing-extension", dependencies=[Depends(staff)],
                 tags=["agreements"], response_model=out.Changed)
    def extend_signing(participant_id: UUID, body: SigningExtensionIn) -> dict[str, Any]:
        """Plan agreements signed by `until` are not flagged late. Nothing is refused for lateness either way."""
        changed = app.extend_signing(participant_id, body.until, body.reason)
        return {**participant_view(app, app.participant(participant_id)), "changed": changed}

    @router.post("/agreements/dsa-signatories", dependencies=[Depends(staff)], tags=["agreements"],
                 response_model=out.SignatoryReport, response_model_exclude_unset=True,
                 openapi_extra={"requestBody": {"content": {"text/csv": {}}}})
    async def import_dsa_signatories(request: Request, list_date: date | None = None) -> dict[str, Any]:
        """The DxF DSA signatory list (CSV: legal_name, and optional npi, tin, signed_on; other columns ignored).
        Matched by NPI/TIN: DSA signed and accepted; by legal name only: signed, left for staff review; the rest
        reported. The same list again changes nothing."""
        data = await read_body(request, MAX_UPLOAD_BYTES)
        parsed = parse_signatory_csv(_text(data))
        day = list_date or plan_day(datetime.now(UTC))
        return await asyncio.to_thread(app.import_dsa_list, parsed, day)

    @router.post("/participants/{participant_id}/withdrawal", dependencies=[Depends(staff)], tags=["participants"],
                 response_model=out.Participant)
    def withdraw(participant_id: UUID, body: DepartureIn) -> dict[str, Any]:
        app.depart(participant_id, "withdrawn", body.effective_on, body.reason)
        return participant_view(app, app.participant(participant_id))

    @router.post("/participants/{participant_id}/termination", dependencies=[Depends(staff)], tags=["participants"],
                 response_model=out.Participant)
    def terminate(participant_id: UUID, body: DepartureIn) -> dict[str, Any]:
        app.depart(participant_id, "terminated", body.effective_on, body.reason)
        return participant_view(app, app.participant(participant_id))

    # -- program rules --------------------------------------------------------------------------------------------
    @router.get("/program-rules", dependencies=[Depends(readers)], tags=["program rules"], response_model=out.ProgramRules)
    def rules(on: date | None = None) -> dict[str, Any]:
        """The latest published version (`current`), the one in force on `on` (default today), and every
        version with its effective date."""
        book = app.rulebook()
        if book.latest is None:
            raise NotFound("no program rules published yet")
        in_force = book.in_force(on or plan_day(datetime.now(UTC)))
        published = {p["version"]: p for p in app.rules_history()}

        def effective(v: Any, later: bool) -> dict[str, Any]:
            """A correction: a later version effective before the day it was published (the first has nothing
            to correct)."""
            shown = published.get(v.version)
            at = shown["published_at"] if shown else None
            return {"version": v.version, "effective_from": v.effective_from.isoformat(),
                    "reason": shown["reason"] if shown else None, "published_at": at.isoformat() if at else None,
                    "correction": later and at is not None and v.effective_from < plan_day(at)}

        return {"current": book.latest.as_stored(), "in_force": in_force.as_stored() if in_force else None,
                "versions": [v.version for v in book.versions],
                "effective": [effective(v, i > 0) for i, v in enumerate(book.versions)]}

    @router.post("/program-rules", dependencies=[Depends(staff)], tags=["program rules"], response_model=out.Published,
                 responses={201: {"description": "a new version published", "model": out.Published}})
    def publish_rules(body: RulesIn, response: Response) -> Any:
        version, changed = app.publish_rules(body.rules, body.reason, body.confirm_lowering)
        response.status_code = status.HTTP_201_CREATED if changed else status.HTTP_200_OK
        return {"version": version, "changed": changed}

    # -- members and rosters -----------------------------------------------------------------------------------
    @router.get("/members/{member_id}", dependencies=[Depends(readers)], tags=["members"], response_model=out.MemberView)
    def member(member_id: str, on: date | None = None) -> Any:
        found, alias = app.member(member_id)
        return member_view(found, alias, on or date.today())

    @router.post("/members/import", dependencies=[Depends(staff)], tags=["members"], response_model=out.RosterReport,
                 openapi_extra={"requestBody": {"content": {"text/csv": {}, "application/edi-x12": {}}}})
    async def import_members(request: Request, format_: Literal["csv", "834"] | None = Query(None, alias="format")) -> Any:
        data = await read_body(request, MAX_UPLOAD_BYTES)
        text = _text(data)
        kind = format_ or ("834" if text.lstrip().startswith("ISA") else "csv")
        parse = rosters.eligibility_834 if kind == "834" else rosters.eligibility_csv
        return await _import(app, "eligibility", kind, data, rosters.parse_apart_when_large(parse, text))

    @router.post("/attributions/import", dependencies=[Depends(staff)], tags=["members"], response_model=out.RosterReport,
                 openapi_extra={"requestBody": {"content": {"text/csv": {}, "application/fhir+json": {},
                                                            "application/fhir+ndjson": {}}}})
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
