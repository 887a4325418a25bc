"""What qip-share publishes (`dsi.qip.*`): each delivery to a QIP entity, as counts and hashes — the disclosure
accounting's headline. Which members were disclosed, and what, stays in its store (`dsi audit disclosures`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from dsi_shared.contracts import Contract, PublicEvent
from pydantic import Field


class DeliveryRecorded(PublicEvent):
    """A delivery was made to a QIP entity (`aggregate_id` is the delivery)."""

    subject = "dsi.qip.delivery-recorded"
    recorded_as = "Delivery.DeliveryRecorded"
    entity_id: UUID
    requirement: str
    period_start: date
    period_end: date
    position: int = Field(description="the data position it was cut at")
    transaction_time: datetime
    policy_version: str
    purpose: str
    legal_basis: str
    files: list[dict[str, Any]] = Field(description="each file's name, records and SHA-256")
    totals: dict[str, Any] = Field(description="record and member counts")
    members: int = Field(description="members disclosed")
    scope_digest: str
    due_date: date | None
    on_time: bool | None


CONTRACT = Contract("qip-share", (DeliveryRecorded,))
