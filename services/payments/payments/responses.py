"""Payments' response bodies, as the OpenAPI documents them (issue 12 §5). Money is always a decimal string."""

from __future__ import annotations

from typing import Any

from dsi_shared.http import Answer
from fastapi import Response
from pydantic import Field


class Payee(Answer):
    """Empty until payments has seen the registration (the route leaves unset fields out)."""

    legal_name: str | None = None
    npi: str | None = None
    tin: str | None = None


class Payment(Answer):
    id: str
    milestone: str
    quarter: str | None
    earned: str
    amount: str = Field(description="what is paid: `earned` cut to the cap")
    cut_reason: str | None
    rule_version: str
    source_event: str
    covers: list[str] = Field(description="exactly what is paid for: credited submissions, or the agreements")
    cap: str | None = Field(None, description="the cap it was cut to (absent in payments from before it was data)")
    cap_scope: str | None = Field(None, description="whom the cap bounded: `organization` (the organization's "
                                  "participations together) or `participation`")
    organization_id: str | None = Field(None, description="the organization (its first participation's id)")
    organization_paid_elsewhere: str | None = Field(
        None, description="what the organization's other participations had been paid before it")
    running_total: str


class HeldPayment(Answer):
    """A milestone owed under a cap the organization shares, waiting for the registration that names it."""

    milestone: str
    quarter: str
    earned: str


class Statement(Answer):
    participant_id: str
    payee: Payee
    payments: list[Payment]
    total_paid: str
    remaining: str | None = Field(description="what may still be paid to this participation (under cap scope "
                                  "`organization`: the organization's headroom)")
    cap: str | None
    cap_scope: str | None = Field(None, description="the scope of the cap in force today")
    organization_id: str | None = Field(None, description="the organization this participation belongs to")
    organization_total_paid: str | None = Field(
        None, description="under cap scope `organization`: what all of the organization's participations were paid")
    organization_remaining: str | None = Field(
        None, description="under cap scope `organization`: what the organization may still be paid")
    held: list[HeldPayment] | None = Field(
        None, description="payments waiting for the participant's registration to reach payments (absent when none)")


class CsvResponse(Response):
    """The accounts-payable export: CSV, not JSON (the OpenAPI says `text/csv`)."""

    media_type = "text/csv"


CSV_EXPORT: dict[int | str, dict[str, Any]] = {
    200: {"description": "the quarter's payments for accounts payable (the same bytes when asked again)",
          "content": {"text/csv": {"schema": {"type": "string"}}}}}


class PaidParticipant(Answer):
    participant_id: str
    total_paid: str
    payments: int


class PaidParticipantList(Answer):
    participants: list[PaidParticipant] = Field(description="participants with a payment account (one never paid "
                                                "has none: it was paid $0)")
    count: int = Field(description="every account matching the filters")
    next_cursor: str | None
