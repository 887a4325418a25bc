"""Milestones HTTP API: progress, quarter closes, and the staff validation of evaluations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth
from dsi_shared.plantime import QUARTER_PATTERN, Quarter, plan_day
from dsi_shared.projections import current
from dsi_shared.projections_query import CURSOR, LIMIT, bodies, page, sort_query
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from milestones import responses as out
from milestones.application import Milestones
from milestones.ledger import Evaluation
from milestones.projections import EVALUATIONS, PROJECTION

QUARTER = Path(pattern=QUARTER_PATTERN, description="a data-capture quarter, e.g. 2025Q4")


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=1000)


def evaluation_view(evaluation: Evaluation) -> dict[str, Any]:
    return {"id": str(evaluation.id), "participant_id": str(evaluation.participant_id), "quarter": evaluation.quarter,
            "subject": evaluation.subject, "milestone": evaluation.milestone, "earning_rule": evaluation.earning_rule,
            "rule_version": evaluation.rule_version, "earned": str(evaluation.earned), "outcome": evaluation.outcome,
            "figures": to_jsonable(evaluation.figures), "state": evaluation.state,
            "decision": to_jsonable(evaluation.decision)}


def routes(app: Milestones, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["milestones"])
    readers = auth.require("program-staff", "auditor")
    staff = auth.require_actor("program-staff")

    @router.get("/participants/{participant_id}/milestones", dependencies=[Depends(readers)], response_model=out.Progress)
    def milestones(participant_id: UUID) -> dict[str, Any]:
        progress = app.progress(participant_id)
        rules = app.rulebook().in_force(plan_day(datetime.now(UTC)))
        row = rules.provider_type(progress.provider_type or "") if rules else None
        return {
            "participant_id": str(participant_id),
            "provider_type": progress.provider_type,
            "eligibility": to_jsonable(progress.eligibility),
            "schedule": {"rule_version": rules.version, **row.model_dump(mode="json")} if rules and row else None,
            "agreement_due_on": to_jsonable(progress.due_on),
            "agreements": to_jsonable(progress.counted_agreements()),
            "signatures": to_jsonable(progress.signatures),
            "findings": progress.findings,
            "milestones": [{"milestone": m, "outcome": "achieved", **to_jsonable(v)} for m, v in progress.achieved.items()]
            + [{"milestone": m, "outcome": "missed", **to_jsonable(v)} for m, v in progress.missed.items()],
            "evaluations": [evaluation_view(e) for e in app.evaluations(participant_id=participant_id)],
        }

    @router.post("/quarters/{quarter}/close", response_model=out.QuarterClose)
    async def close(quarter: str = QUARTER, actor: str = Depends(staff)) -> dict[str, Any]:
        return to_jsonable(await asyncio.to_thread(app.close_quarter, quarter, actor, datetime.now(UTC)))

    @router.get("/quarters/{quarter}", dependencies=[Depends(readers)], response_model=out.ClosedQuarter)
    def closed(quarter: str = QUARTER) -> dict[str, Any]:
        summary = app.close_summary(Quarter.parse(quarter), already_closed=True)
        return {**to_jsonable(summary), "evaluations": [evaluation_view(e) for e in app.evaluations(quarter=quarter)]}

    @router.get("/evaluations", dependencies=[Depends(readers)], response_model=out.EvaluationList)
    def evaluations(quarter: str | None = Query(None, pattern=QUARTER_PATTERN),
                    state: str | None = Query(None, pattern="^(pending_validation|validated|rejected)$"),
                    participant_id: UUID | None = None,
                    sort: str = sort_query(("recorded", "quarter", "earned"), "recorded"),
                    limit: int = LIMIT, cursor: str | None = CURSOR) -> dict[str, Any]:
        """Evaluations from the read model: `recorded` = the order they were recorded in."""
        table = EVALUATIONS.c
        where = [table.quarter == quarter] if quarter else []
        where += [table.state == state] if state else []
        where += [table.participant_id == str(participant_id)] if participant_id else []
        found = page(current(app, PROJECTION).engine, EVALUATIONS, where, sort,
                     {"recorded": table.seq, "quarter": table.quarter, "earned": table.earned_cents}, limit, cursor)
        return {"count": found.count, "evaluations": bodies(found), "next_cursor": found.next_cursor}

    @router.get("/evaluations/{evaluation_id}", dependencies=[Depends(readers)], response_model=out.EvaluationView)
    def evaluation(evaluation_id: UUID) -> dict[str, Any]:
        return evaluation_view(app.evaluation(evaluation_id))

    @router.post("/evaluations/{evaluation_id}/validate", response_model=out.EvaluationView)
    def validate(evaluation_id: UUID, actor: str = Depends(staff)) -> dict[str, Any]:
        return evaluation_view(app.validate(evaluation_id, actor, datetime.now(UTC)))

    @router.post("/evaluations/{evaluation_id}/reject", response_model=out.EvaluationView)
    def reject(evaluation_id: UUID, body: Rejection, actor: str = Depends(staff)) -> dict[str, Any]:
        return evaluation_view(app.reject(evaluation_id, body.reason, actor, datetime.now(UTC)))

    return router
