"""Payments HTTP API."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any
from uuid import UUID

from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth
from dsi_shared.plantime import QUARTER_PATTERN, Quarter
from dsi_shared.projections import current
from dsi_shared.projections_query import CURSOR, LIMIT, cents, dollars_query, page, sort_query
from fastapi import APIRouter, Depends, Query, Response

from payments import responses as out
from payments.application import Payments
from payments.domain import ORGANIZATION, ZERO
from payments.projections import PAID, PROJECTION


def routes(app: Payments, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["payments"])

    @router.get("/participants/{participant_id}/payments",
                dependencies=[Depends(auth.require("program-staff", "auditor"))],
                response_model=out.Statement, response_model_exclude_unset=True)
    def statement(participant_id: UUID) -> dict[str, Any]:
        account = app.account(participant_id)
        terms = app.terms_today()
        cap = terms.cap if terms else account.cap
        running = ZERO
        payments = []
        for payment in account.payments:
            running += payment["amount"]
            payments.append({**to_jsonable(payment), "running_total": str(running)})
        body: dict[str, Any] = {
            "participant_id": str(participant_id),
            "payee": account.payee,
            "payments": payments,
            "total_paid": str(account.total_paid),
            "remaining": str(account.remaining(cap)) if cap is not None else None,
            "cap": str(cap) if cap is not None else None,
        }
        if account.held:
            body["held"] = [{"milestone": h["milestone"], "quarter": h["quarter"], "earned": str(h["earned"])}
                            for h in account.held]
        if terms is None:
            return body
        body.update(cap_scope=terms.cap_scope, organization_id=str(account.organization))
        ledger = app.ledger(account.organization)
        if terms.cap_scope == ORGANIZATION and ledger is not None:
            headroom = max(ZERO, terms.cap - ledger.total_paid)
            body.update(organization_total_paid=str(ledger.total_paid), organization_remaining=str(headroom),
                        remaining=str(min(headroom, account.remaining(terms.cap))))
        return body

    @router.get("/payments/participants", dependencies=[Depends(auth.require("program-staff", "auditor"))],
                response_model=out.PaidParticipantList)
    def paid_participants(paid_min: Decimal | None = dollars_query("paid in all, at least"),
                          paid_max: Decimal | None = dollars_query("paid in all, at most"),
                          sort: str = sort_query(("opened", "paid"), "opened"),
                          limit: int = LIMIT, cursor: str | None = CURSOR) -> dict[str, Any]:
        """What each participant was paid in all, from the read model (`opened` = the order accounts were opened in):
        the console's "amount paid" filter, combined there with enrollment's participants."""
        table = PAID.c
        where = [table.paid_cents >= cents(paid_min)] if paid_min is not None else []
        where += [table.paid_cents <= cents(paid_max)] if paid_max is not None else []
        found = page(current(app, PROJECTION).engine, PAID, where, sort,
                     {"opened": table.seq, "paid": table.paid_cents}, limit, cursor)
        return {"participants": [{"participant_id": row.participant_id, "total_paid": str(Decimal(row.paid_cents).scaleb(-2)),
                                  "payments": row.payments} for row in found.rows],
                "count": found.count, "next_cursor": found.next_cursor}

    @router.get("/payments/export", dependencies=[Depends(auth.require("program-staff", "auditor"))],
                response_class=out.CsvResponse, responses=out.CSV_EXPORT)
    def export(quarter: str = Query(pattern=QUARTER_PATTERN, description="e.g. 2025Q4")) -> Response:
        quarter = str(Quarter.parse(quarter))  # a year outside the plan's range: 422
        body = app.export(quarter).encode()
        return Response(body, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="dsi-payments-{quarter}.csv"',
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})

    return router
