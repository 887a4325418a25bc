"""What the console knows of each participant, from the public event streams (issue 15 §1: it "builds its own read
models from the streams"): one aggregate per participant, kept by the console's tracking consumers and turned into SQL
rows by `readmodel`. Only what the public events carry, and of that only what the console's lists and charts show:
no TIN, no CIN, no contact.

The streams are read by one consumer each, so a payment may arrive before the registration it pays: every fact
opens the participant's aggregate if it is not there yet, and the lists show only registered participants."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

ELIGIBLE, INELIGIBLE = "eligible", "ineligible"  # enrollment's statuses (a departure's kind otherwise)
MILESTONE_1 = "M1"


class ParticipantOverview(Aggregate):
    """A participant as the console lists it. Its id is the participant's own (the console's store holds nothing else
    keyed by a participant id)."""

    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return participant_id

    @event("Opened")
    def __init__(self, participant_id: UUID) -> None:
        self.legal_name: str | None = None  # None: its registration has not reached the console yet
        self.npi: str | None = None
        self.provider_type: str | None = None
        self.counties: list[str] = []
        self.eligible: bool | None = None
        self.departure: str | None = None
        self.milestone1 = False
        self.payments: dict[str, dict[str, str]] = {}  # payment id → quarter, amount (a decimal string)

    @event("RegistrationNoted")
    def note_registration(self, legal_name: str, npi: str | None, provider_type: str, counties: list[str]) -> None:
        self.legal_name, self.npi, self.provider_type, self.counties = legal_name, npi, provider_type, counties

    @event("EligibilityNoted")
    def note_eligibility(self, eligible: bool) -> None:
        self.eligible = eligible

    @event("DepartureNoted")
    def note_departure(self, kind: str) -> None:
        self.departure = kind

    @event("Milestone1Noted")
    def note_milestone1(self) -> None:
        self.milestone1 = True

    @event("PaymentNoted")
    def note_payment(self, payment_id: str, quarter: str, amount: str) -> None:
        self.payments[payment_id] = {"quarter": quarter, "amount": amount}

    # -- what it shows ---------------------------------------------------------------------------------------------
    @property
    def registered(self) -> bool:
        return self.legal_name is not None

    @property
    def status(self) -> str:
        """As enrollment states it: the departure's kind, else eligible or ineligible (not determined yet counts as
        ineligible, as enrollment shows it)."""
        if self.departure is not None:
            return self.departure
        return ELIGIBLE if self.eligible else INELIGIBLE

    @property
    def total_paid(self) -> Decimal:
        return sum((Decimal(p["amount"]) for p in self.payments.values()), Decimal(0))


def paid(overview: ParticipantOverview, payment_id: str, quarter: str, amount: Decimal) -> ParticipantOverview:
    """A payment noted once (the same payment re-published under another position is not counted again)."""
    if payment_id not in overview.payments:
        overview.note_payment(payment_id=payment_id, quarter=quarter, amount=str(amount))
    return overview


def cents(amount: Decimal) -> int:
    """Dollars → whole cents (the tables keep money as integers: exact on SQLite and PostgreSQL alike)."""
    return int((amount * 100).to_integral_value())


def as_row(overview: Any) -> dict[str, Any]:
    """The fields of the participants table for one overview (the read model's pure row function)."""
    return {"legal_name": overview.legal_name, "npi": overview.npi, "provider_type": overview.provider_type,
            "status": overview.status, "milestone1": overview.milestone1, "paid_cents": cents(overview.total_paid)}
