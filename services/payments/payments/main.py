"""Composition root of the payments service."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dsi_shared.service import AuditFacts, AuditReport, ServiceApplication, ServiceSpec, events_as_of, rebuild_aggregates
from dsi_shared.telemetry import PAID

from payments.api import routes
from payments.application import Payments
from payments.contract import CONTRACT
from payments.domain import ZERO, PaymentAccount, capped
from payments.handlers import SUBSCRIPTIONS


def audit(app: ServiceApplication, facts: AuditFacts) -> AuditReport:
    """Rebuild every ledger; check it against the PaymentIssued events in the log and against the payout
    re-derived from the achieved milestones (each paid once, capped)."""
    report = AuditReport()
    logged: dict[str, Decimal] = {}
    for domain_event in events_as_of(app, facts):
        if type(domain_event).__name__ == "PaymentIssued":
            pid = str(domain_event.participant_id)
            logged[pid] = logged.get(pid, ZERO) + domain_event.amount
    achieved: dict[str, dict[str, Decimal]] = facts.get("milestones_achieved", {})
    seen: set[str] = set()
    assert isinstance(app, Payments)
    cap_today = app.cap_today()
    for account in rebuild_aggregates(app, report, facts):
        if not isinstance(account, PaymentAccount):
            continue
        pid = str(account.participant_id)
        seen.add(pid)
        total = account.total_paid
        cap = account.cap or cap_today
        report.rows[pid] = {"total_paid": str(total), "remaining": str(account.remaining(cap)) if cap else "-"}
        if total != logged.get(pid, ZERO):
            report.problems.append(f"payments: {pid} ledger rebuilt to {total}, log's payments sum to {logged.get(pid, ZERO)}")
        expected = rederive(achieved.get(pid, {}), cap or ZERO)
        if "milestones_achieved" in facts and total != expected:
            report.problems.append(f"payments: {pid} paid {total}, milestones achieved re-derive {expected}")
    for pid, milestones in achieved.items():
        if pid not in seen and rederive(milestones, cap_today or ZERO) != ZERO:
            report.problems.append(f"payments: {pid} achieved {sorted(milestones)} but has no payment account")
    return report


def observe(domain_event: Any) -> None:
    if type(domain_event).__name__ == "PaymentIssued":
        PAID.add(float(domain_event.amount), {"milestone": str(domain_event.milestone).split(":", 1)[0]})


def rederive(milestones: dict[str, Decimal], cap: Decimal) -> Decimal:
    """Each milestone once, in order, cut to `cap` (the cap the account's payments were cut to)."""
    total = ZERO
    for milestone in sorted(milestones):
        total += capped(milestones[milestone], total, cap)
    return total


service = ServiceSpec(
    name="payments",
    default_port=8104,
    application=Payments,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    observe=observe,
    audit_order=30,
)
