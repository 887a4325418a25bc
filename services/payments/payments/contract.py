"""What payments publishes (`dsi.payments.*`): each payment issued — the finance system's feed. Accounts and payee
details stay in its store."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from dsi_shared.contracts import Contract, PublicEvent
from pydantic import Field


class PaymentIssued(PublicEvent):
    """A payment (`aggregate_id` is the participant's account), cut to the program cap when needed."""

    subject = "dsi.payments.payment-issued"
    recorded_as = "PaymentAccount.PaymentIssued"
    payment_id: UUID
    participant_id: UUID
    milestone: str
    quarter: str
    earned: Decimal = Field(description="what the milestone earned")
    amount: Decimal = Field(description="what is paid: earned, cut to what the cap leaves")
    cut_reason: str | None
    rule_version: str
    source_event: str = Field(description="the milestones event it pays (its CloudEvent id)")
    covers: list[str] = Field(description="what it pays for: agreement:<id> or submission:<id>")
    cap: Decimal | None = None
    cap_scope: str | None = Field(default=None, description="organization or participation: whom `cap` bounds")
    organization_id: UUID | None = Field(default=None, description="the organization the participation belongs to")
    organization_paid_elsewhere: Decimal | None = Field(
        default=None, description="what the organization's other participations had been paid before this payment")


CONTRACT = Contract("payments", (PaymentIssued,))
