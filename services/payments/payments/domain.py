"""PaymentAccount aggregate: the per-participant ledger and the cap (DOMAIN.md A4).

"Payments never push a participant past $40,000 in total: the last payment is cut to the remainder,
and nothing is paid after the cap." Each milestone is paid at most once. The cap is the rules' `program.cap`
in force on the first day of the quarter a payment is for; each payment records the cap it was cut to.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import PermanentError
from eventsourcing.domain import Aggregate, event

ZERO = Decimal("0.00")


class AlreadyPaid(PermanentError):
    pass


def capped(earned: Decimal, paid_so_far: Decimal, cap: Decimal) -> Decimal:
    """What may be paid of `earned` without the total passing the cap."""
    return max(ZERO, min(earned, cap - paid_so_far))


class PaymentAccount(Aggregate):
    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/payments/account/{participant_id}")

    @event("PaymentAccountOpened")
    def __init__(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        self.payee: dict[str, Any] = {}
        self.payments: list[dict[str, Any]] = []

    @property
    def total_paid(self) -> Decimal:
        return sum((p["amount"] for p in self.payments), ZERO)

    @property
    def cap(self) -> Decimal | None:
        """The cap the latest payment was cut to (None before any payment, or in payments from before the cap
        was program data)."""
        return next((p["cap"] for p in reversed(self.payments) if p.get("cap") is not None), None)

    def remaining(self, cap: Decimal) -> Decimal:
        return max(ZERO, cap - self.total_paid)

    def record_payee(self, legal_name: str, npi: str | None, tin: str | None) -> None:
        if {"legal_name": legal_name, "npi": npi, "tin": tin} != self.payee:
            self.payee_recorded(legal_name=legal_name, npi=npi, tin=tin)

    @event("PayeeRecorded")
    def payee_recorded(self, legal_name: str, npi: str | None, tin: str | None) -> None:
        self.payee = {"legal_name": legal_name, "npi": npi, "tin": tin}

    def pay(self, milestone: str, earned: Decimal, quarter: str, rule_version: str, source_event: str,
            cap: Decimal, covers: list[str] | None = None) -> bool:
        """Pay an achieved milestone (or a validated quarter's evaluation) once, cut to the cap. False when it was
        already paid. `covers` names exactly what is paid for: credited submissions, or the agreements."""
        if any(p["milestone"] == milestone for p in self.payments):
            return False
        paid_before = {c for p in self.payments for c in p["covers"]}
        if covers and paid_before & set(covers):
            raise AlreadyPaid("a credit in this evaluation was paid before")
        amount = capped(earned, self.total_paid, cap)
        reason = None if amount == earned else ("cap reached" if amount == ZERO else f"cut to the ${cap:,} cap")
        self.issue(
            payment_id=uuid5(NAMESPACE_URL, f"/dsi/payments/{self.participant_id}/{milestone}"),
            participant_id=self.participant_id,
            milestone=milestone,
            quarter=quarter,
            earned=earned,
            amount=amount,
            cut_reason=reason,
            rule_version=rule_version,
            source_event=source_event,
            covers=sorted(covers or []),
            cap=cap,
        )
        return True

    @event("PaymentIssued")
    def issue(self, payment_id: UUID, participant_id: UUID, milestone: str, quarter: str, earned: Decimal,
              amount: Decimal, cut_reason: str | None, rule_version: str, source_event: str,
              covers: list[str], cap: Decimal | None = None) -> None:
        self.payments.append({"id": payment_id, "milestone": milestone, "quarter": quarter, "earned": earned,
                              "amount": amount, "cut_reason": cut_reason, "rule_version": rule_version,
                              "source_event": source_event, "covers": covers, "cap": cap})
