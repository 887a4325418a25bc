"""Payments HTTP API."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth
from dsi_shared.plantime import QUARTER_PATTERN, Quarter
from fastapi import APIRouter, Depends, Query, Response

from payments import responses as out
from payments.application import Payments
from payments.domain import ORGANIZATION, ZERO


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

    @router.get("/payments/export", dependencies=[Depends(auth.require("program-staff", "auditor"))],
                response_class=out.CsvResponse, responses=out.CSV_EXPORT)
    def export(quarter: str = Query(pattern=QUARTER_PATTERN, description="e.g. 2025Q4")) -> Response:
        quarter = str(Quarter.parse(quarter))  # a year outside the plan's range: 422
        body = app.export(quarter).encode()
        return Response(body, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="dsi-payments-{quarter}.csv"',
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})

    return router
