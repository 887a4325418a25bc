"""Payments' part of `dsi audit replay`: every ledger rebuilt and checked against the PaymentIssued events in the log
and against the payout re-derived from what milestones reports owed (`AuditContext.achieved`), each payment under
the cap and cap scope it records; what a payment records its organization had been paid elsewhere is checked
against the organization's payments before it in the log."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dsi_shared.audit import AuditContext
from dsi_shared.service import AuditReport, ServiceApplication, rebuild_aggregates

from payments.application import Payments
from payments.domain import ZERO, OrganizationLedger, PaymentAccount, payable


def audit(app: ServiceApplication, context: AuditContext) -> AuditReport:
    """Rebuild every ledger; check it against the PaymentIssued events in the log and against the payout
    re-derived from the achieved milestones (each paid once, capped)."""
    report = AuditReport()
    logged: dict[str, Decimal] = {}
    organizations: dict[Any, dict[Any, Decimal]] = {}  # organization -> participation -> counted so far, in log order

    def sum_payments(domain_event: Any) -> None:  # the log's own PaymentIssued events, beside the rebuilt ledgers
        kind = type(domain_event).__name__
        if kind == "PaymentCounted":
            counted = organizations.setdefault(domain_event.originator_id, {})
            counted[domain_event.participant_id] = counted.get(domain_event.participant_id, ZERO) + domain_event.amount
        if kind != "PaymentIssued":
            return
        pid = str(domain_event.participant_id)
        logged[pid] = logged.get(pid, ZERO) + domain_event.amount
        recorded = getattr(domain_event, "organization_paid_elsewhere", None)
        if recorded is not None:
            counted = organizations.get(OrganizationLedger.create_id(domain_event.organization_id), {})
            elsewhere = sum(counted.values(), ZERO) - counted.get(domain_event.participant_id, ZERO)
            if recorded != elsewhere:
                report.problems.append(f"payments: {pid} {domain_event.milestone} records {recorded} paid elsewhere in "
                                       f"its organization, the log's payments before it sum to {elsewhere}")

    achieved = context.achieved or {}
    seen: set[str] = set()
    assert isinstance(app, Payments)
    cap_today = app.cap_today()
    for account in rebuild_aggregates(app, report, context, each=sum_payments):
        if not isinstance(account, PaymentAccount):
            continue
        pid = str(account.participant_id)
        seen.add(pid)
        total = account.total_paid
        cap = account.cap or cap_today
        report.rows[pid] = {"total_paid": str(total), "remaining": str(account.remaining(cap)) if cap else "-"}
        if total != logged.get(pid, ZERO):
            report.problems.append(f"payments: {pid} ledger rebuilt to {total}, log's payments sum to {logged.get(pid, ZERO)}")
        expected = rederive(achieved.get(pid, {}), cap or ZERO, account.payments)
        if context.achieved is not None and total != expected:
            report.problems.append(f"payments: {pid} paid {total}, milestones achieved re-derive {expected}")
    for pid, milestones in achieved.items():
        if pid not in seen and rederive(milestones, cap_today or ZERO) != ZERO:
            report.problems.append(f"payments: {pid} achieved {sorted(milestones)} but has no payment account")
    return report


def rederive(milestones: dict[str, Decimal], cap: Decimal, payments: list[dict[str, Any]] | None = None) -> Decimal:
    """Each milestone once, in order, cut to `cap` (the cap the account's payments were cut to) by the same decision
    as when it was paid (`payable`), under the scope and the organization's payments elsewhere its payment records."""
    paid = {p["milestone"]: p for p in payments or []}
    total = ZERO
    for milestone in sorted(milestones):
        payment = paid.get(milestone, {})
        total += payable(milestones[milestone], total, payment.get("organization_paid_elsewhere"), cap,
                         payment.get("cap_scope"))
    return total
