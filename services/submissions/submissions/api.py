"""Submissions HTTP API."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from dsi_shared.errors import Unprocessable
from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth, Sender, read_body
from dsi_shared.jsonsafe import check_depth
from dsi_shared.plantime import EARLIEST_YEAR, LATEST_YEAR, in_plan_years
from dsi_shared.projections import current
from dsi_shared.projections_query import CURSOR, LIMIT, bodies, page, sort_query
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from submissions import responses as out
from submissions.application import CDA_TYPE, FHIR_TYPE, MessageAnswer, Submissions, stated_receipt_problem
from submissions.domain import Submission
from submissions.projections import PROJECTION, SUBMISSIONS

MAX_BODY_BYTES = int(os.environ.get("DSI_MLLP_MAX_BYTES", str(16 * 1024 * 1024)))


def submission_view(submission: Submission) -> dict[str, Any]:
    return {
        "id": str(submission.id),
        "participant_id": str(submission.participant_id) if submission.participant_id else None,
        "channel": submission.channel,
        "received_at": submission.received_at.isoformat(),
        "content_type": submission.content_type,
        "payload_sha256": submission.payload_sha256,
        "hie_submission_id": submission.hie_submission_id,
        "facts": to_jsonable(submission.facts),
        "verdict": submission.verdict,
        "reasons": submission.reasons,
        "amount": str(submission.amount),
        "credit": to_jsonable(submission.credit),
        "reversed_by": str(submission.reversed_by) if submission.reversed_by else None,
        "history": to_jsonable(submission.history),
    }


def answer_view(answer: MessageAnswer) -> dict[str, Any]:
    return {"control_id": answer.control_id, "ack_code": answer.ack_code, "problems": answer.problems,
            "submission_id": str(answer.submission_id) if answer.submission_id else None, "verdict": answer.verdict,
            "reasons": answer.reasons, "ack": answer.ack}


def _receipt(sender: Sender, stated: datetime | None) -> tuple[datetime, dict[str, Any]]:
    """When the file was received, and the facts that say who sent it: the server's clock, unless the token has
    `+backdate` and states an earlier `received_at` within `DSI_HIE_MAX_DELAY_HOURS` (recorded with its
    fingerprint, never the token)."""
    now = datetime.now(UTC)
    origin: dict[str, Any] = {"submitted_by": sender.actor}
    if stated is None:
        return now, origin
    if stated.tzinfo is None:
        raise Unprocessable("received_at must carry a UTC offset")
    if not in_plan_years(stated):
        raise Unprocessable(f"received_at: outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
    if not sender.grant.backdate:
        raise HTTPException(403, "received_at is the server's clock: this token may not state it (that needs "
                                 "+backdate on its DSI_TOKENS entry); send the file without received_at")
    if problem := stated_receipt_problem(stated, now):
        raise Unprocessable(problem)
    origin["backdated"] = {"by": sender.actor, "server_received_at": now.isoformat()}
    return stated, origin


def routes(app: Submissions, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["submissions"])
    senders = auth.require_sender("hie", "program-staff")
    readers = auth.require("program-staff", "auditor")

    @router.post("/hl7", response_model=out.Hl7Answer,
                 openapi_extra={"requestBody": {"content": {"x-application/hl7-v2+er7": {}, "text/plain": {}}}})
    async def post_hl7(request: Request, received_at: datetime | None = Query(
                           None, description="HIE receipt time: only for tokens with +backdate; default the server's clock"),
                       hie_submission_id: str | None = None, sender: Sender = Depends(senders)) -> dict[str, Any]:
        """A file of one or more HL7 v2 messages (the HIE's forwarded combined file); answered per message."""
        at, origin = _receipt(sender, received_at)
        data = await read_body(request, MAX_BODY_BYTES)
        evaluation = await asyncio.to_thread(app.receive_hl7, data, at, "http", hie_submission_id, None,
                                             sender.grant.senders, origin)
        return {"messages": [answer_view(a) for a in evaluation.answers],
                "submissions": [submission_view(s) for s in evaluation.submissions]}

    @router.post("/longitudinal-records", response_model=out.SubmissionView,
                 openapi_extra={"requestBody": {"content": {FHIR_TYPE: {}, CDA_TYPE: {}}}})
    async def post_record(request: Request, participant_id: UUID | None = None, sending_facility: str | None = None,
                          received_at: datetime | None = None, sender: Sender = Depends(senders)) -> dict[str, Any]:
        """One member's longitudinal record: a FHIR R4 Bundle (JSON) or a C-CDA CCD (XML)."""
        at, origin = _receipt(sender, received_at)
        data = await read_body(request, MAX_BODY_BYTES)
        content_type = CDA_TYPE if "xml" in request.headers.get("content-type", "") else FHIR_TYPE
        if content_type == FHIR_TYPE:
            check_depth(data, "the Bundle")  # 422 before anything is stored: parsing it would exhaust the stack
        evaluation = await asyncio.to_thread(app.receive_record, data, content_type, at, "http", participant_id,
                                             sending_facility, sender.grant.senders, origin)
        return submission_view(evaluation.submissions[0])

    @router.get("/submissions/{submission_id}", dependencies=[Depends(readers)], response_model=out.SubmissionView)
    def show(submission_id: UUID) -> dict[str, Any]:
        return submission_view(app.submission(submission_id))

    @router.get("/participants/{participant_id}/submissions", dependencies=[Depends(readers)],
                response_model=out.SubmissionList)
    def of_participant(participant_id: UUID,
                       verdict: str | None = Query(None, pattern="^(credited|rejected|recorded)$"),
                       channel: str | None = Query(None, max_length=40),
                       sort: str = sort_query(("received", "received_at"), "received"),
                       limit: int = LIMIT, cursor: str | None = CURSOR) -> dict[str, Any]:
        """A participant's submissions from the read model: `received` = the order they were recorded in."""
        table = SUBMISSIONS.c
        where = [table.participant_id == str(participant_id)]
        where += [table.verdict == verdict] if verdict else []
        where += [table.channel == channel] if channel else []
        found = page(current(app, PROJECTION).engine, SUBMISSIONS, where, sort,
                     {"received": table.seq, "received_at": table.received_at}, limit, cursor)
        return {"participant_id": str(participant_id), "submissions": bodies(found), "count": found.count,
                "next_cursor": found.next_cursor}

    return router
