"""PaymentAccount aggregate: the per-participant ledger and the cap (DOMAIN.md A4); OrganizationLedger: what an
organization's participations were paid, for the cap they share.

"Payments never push a participant past $40,000 in total: the last payment is cut to the remainder,
and nothing is paid after the cap." Each milestone is paid at most once. The cap is the rules' `program.cap`
in force on the first day of the quarter a payment is for; each payment records the cap it was cut to.

Whom the cap is for is the rules' `program.cap_scope` in force for that quarter (issue 11 §3, applying again):
"Whether a later round brings its own Milestone 1 and cap or shares the organization's $40,000 is not stated: a
rules parameter `cap_scope` (`organization` | `participation`), shipped as `organization` ("up to $40,000"
offered to a provider)". "Participants will be eligible to continue earning so long as the maximum of $40,000 has
not been reached": under `organization` the maximum is reached by the organization's payments together.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import PermanentError
from eventsourcing.domain import Aggregate, event

ZERO = Decimal("0.00")
ORGANIZATION, PARTICIPATION = "organization", "participation"  # the rules' `program.cap_scope`


class AlreadyPaid(PermanentError):
    pass


def capped(earned: Decimal, paid_so_far: Decimal, cap: Decimal) -> Decimal:
    """What may be paid of `earned` without the total passing the cap."""
    return max(ZERO, min(earned, cap - paid_so_far))


def payable(earned: Decimal, paid_here: Decimal, paid_elsewhere: Decimal | None, cap: Decimal,
            cap_scope: str | None) -> Decimal:
    """The cap decision (DOMAIN.md A4, issue 11 §3): what may be paid of `earned` to a participation that was paid
    `paid_here`, while its organization's other participations were paid `paid_elsewhere`. Under `organization`
    the cap bounds the organization's total ("up to $40,000" offered to a provider: a later round shares it);
    under `participation` (or in payments from before the scope was data: None) each participation has its own."""
    elsewhere = (paid_elsewhere or ZERO) if cap_scope == ORGANIZATION else ZERO
    counted = paid_here + elsewhere
    return capped(earned, counted, cap)


def cut_reason(earned: Decimal, amount: Decimal, cap: Decimal) -> str | None:
    """Why less than earned was paid (the payment records the cap's scope beside it)."""
    if amount == earned:
        return None
    return "cap reached" if amount == ZERO else f"cut to the ${cap:,} cap"


class PaymentAccount(Aggregate):
    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/payments/account/{participant_id}")

    @event("PaymentAccountOpened")
    def __init__(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        self.payee: dict[str, Any] = {}
        self.organization_id: UUID | None = None  # a later round's first participation (enrollment's)
        self.payments: list[dict[str, Any]] = []
        self.held: list[dict[str, Any]] = []  # payments waiting for the registration (`hold`)

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

    @property
    def registered(self) -> bool:
        """Payments has seen the registration (so it knows the organization)."""
        return bool(self.payee)

    @property
    def organization(self) -> UUID:
        """The organization this participation belongs to, as enrollment links it: its first participation's id."""
        return self.organization_id or self.participant_id

    def record_payee(self, legal_name: str, npi: str | None, tin: str | None, organization_id: UUID | None = None) -> None:
        if ({"legal_name": legal_name, "npi": npi, "tin": tin} != self.payee
                or organization_id != self.organization_id):
            self.payee_recorded(legal_name=legal_name, npi=npi, tin=tin, organization_id=organization_id)

    @event("PayeeRecorded")
    def payee_recorded(self, legal_name: str, npi: str | None, tin: str | None,
                       organization_id: UUID | None = None) -> None:
        """`organization_id`: absent in events recorded before payments knew organizations (then its own)."""
        self.payee = {"legal_name": legal_name, "npi": npi, "tin": tin}
        self.organization_id = organization_id

    def pay(self, milestone: str, earned: Decimal, quarter: str, rule_version: str, source_event: str,
            cap: Decimal, covers: list[str] | None = None, cap_scope: str | None = None,
            paid_elsewhere: Decimal | None = None) -> bool:
        """Pay an achieved milestone (or a validated quarter's evaluation) once, cut to the cap (`payable`). False
        when it was already paid. `covers` names exactly what is paid for: credited submissions, or the agreements.
        `paid_elsewhere`: what the organization's other participations had been paid (None: not known, as before
        the registration was seen); recorded with the scope so that an audit re-derives the same amount."""
        if not self._new(milestone, covers, self.payments):
            return False
        amount = payable(earned, self.total_paid, paid_elsewhere, cap, cap_scope)
        self.issue(
            payment_id=uuid5(NAMESPACE_URL, f"/dsi/payments/{self.participant_id}/{milestone}"),
            participant_id=self.participant_id,
            milestone=milestone,
            quarter=quarter,
            earned=earned,
            amount=amount,
            cut_reason=cut_reason(earned, amount, cap),
            rule_version=rule_version,
            source_event=source_event,
            covers=sorted(covers or []),
            cap=cap,
            cap_scope=cap_scope,
            organization_id=self.organization if self.registered else None,
            organization_paid_elsewhere=paid_elsewhere,
        )
        return True

    def _new(self, milestone: str, covers: list[str] | None, among: list[dict[str, Any]]) -> bool:
        """False when the milestone is among `among` already; AlreadyPaid when one of its credits is."""
        if any(p["milestone"] == milestone for p in among):
            return False
        if covers and {c for p in among for c in p["covers"]} & set(covers):
            raise AlreadyPaid("a credit in this evaluation was paid before")
        return True

    def hold(self, milestone: str, earned: Decimal, quarter: str, rule_version: str, source_event: str,
             covers: list[str]) -> bool:
        """A payment whose cap the organization shares, before the registration that names the organization has
        reached payments (it travels on another stream): held in arrival order and decided when the registration
        arrives, so the amount never depends on which stream's message came first (DOMAIN.md A4)."""
        if not self._new(milestone, covers, [*self.payments, *self.held]):
            return False
        self.payment_held(milestone=milestone, earned=earned, quarter=quarter, rule_version=rule_version,
                          source_event=source_event, covers=sorted(covers))
        return True

    @event("PaymentHeld")
    def payment_held(self, milestone: str, earned: Decimal, quarter: str, rule_version: str, source_event: str,
                     covers: list[str]) -> None:
        self.held.append({"milestone": milestone, "earned": earned, "quarter": quarter, "rule_version": rule_version,
                          "source_event": source_event, "covers": covers})

    @event("PaymentIssued")
    def issue(self, payment_id: UUID, participant_id: UUID, milestone: str, quarter: str, earned: Decimal,
              amount: Decimal, cut_reason: str | None, rule_version: str, source_event: str,
              covers: list[str], cap: Decimal | None = None, cap_scope: str | None = None,
              organization_id: UUID | None = None, organization_paid_elsewhere: Decimal | None = None) -> None:
        """The last three are absent in payments from before the cap's scope was data."""
        self.held = [h for h in self.held if h["milestone"] != milestone]
        self.payments.append({"id": payment_id, "milestone": milestone, "quarter": quarter, "earned": earned,
                              "amount": amount, "cut_reason": cut_reason, "rule_version": rule_version,
                              "source_event": source_event, "covers": covers, "cap": cap, "cap_scope": cap_scope,
                              "organization_id": organization_id,
                              "organization_paid_elsewhere": organization_paid_elsewhere})


class OrganizationLedger(Aggregate):
    """What each participation of one organization was paid, in the order payments recorded it: the total a cap of
    scope `organization` bounds. Saved with the payment it counts, so two participations paid at once conflict and
    one is decided again (never both under the same headroom)."""

    @staticmethod
    def create_id(organization: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/payments/organization/{organization}")

    @event("OrganizationLedgerOpened")
    def __init__(self, organization: UUID) -> None:
        self.organization = organization
        self.paid: dict[UUID, Decimal] = {}  # participation -> its total
        self.counted: set[UUID] = set()  # payment ids

    @property
    def total_paid(self) -> Decimal:
        return sum(self.paid.values(), ZERO)

    def paid_elsewhere(self, participant_id: UUID) -> Decimal:
        return self.total_paid - self.paid.get(participant_id, ZERO)

    def count(self, participant_id: UUID, payment_id: UUID, amount: Decimal) -> None:
        """Count a payment once (a payment made before its registration was seen is counted when it is)."""
        if payment_id not in self.counted:
            self.payment_counted(participant_id=participant_id, payment_id=payment_id, amount=amount)

    @event("PaymentCounted")
    def payment_counted(self, participant_id: UUID, payment_id: UUID, amount: Decimal) -> None:
        self.paid[participant_id] = self.paid.get(participant_id, ZERO) + amount
        self.counted.add(payment_id)


class HeldForRules(Aggregate):
    """The accounts with a payment held because no rules were in force for its quarter: what a rules publication
    decides (instead of reading every account). A hold for rules and every rules publication both write it, so the
    two are ordered by optimistic concurrency: whichever saves second decides again from what the first saved — a
    payment held while the rules are being recorded by another consumer (or replica) can never miss them."""

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/dsi/payments/held-for-rules")

    @event("HeldForRulesStarted")
    def __init__(self, accounts: list[str]) -> None:
        self.accounts = list(accounts)  # participant ids, in the order their first payment was held

    def wait(self, participant_id: UUID) -> None:
        self.account_waiting(participant_id=str(participant_id))

    @event("AccountWaiting")
    def account_waiting(self, participant_id: str) -> None:
        if participant_id not in self.accounts:
            self.accounts.append(participant_id)

    @event("RulesArrived")
    def rules_arrived(self, rules_copy_version: int, still_waiting: list[str]) -> None:
        """Always recorded when rules arrive (even with nobody waiting): that write is what orders it with a hold."""
        self.accounts = list(still_waiting)
