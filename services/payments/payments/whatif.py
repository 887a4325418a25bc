"""What-if, payments' part (issue 11 §5): what milestones' part says each participant earned under each book, cut
to the cap by the rule payments pays by (`payable`), under the cap and its scope in force on the first day of each
earning's quarter: under `organization` an organization's participations share the cap, in the order owed (quarter
by quarter, Milestone 1 first). The organization of each participant is the one payments recorded from enrollment.
Nothing is recorded."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from dsi_shared.audit import Earning, WhatIfContext
from dsi_shared.rulebook import RuleBook

from payments.application import Payments
from payments.domain import ZERO, payable


def paid_under(book: RuleBook, earnings: dict[str, list[Earning]], organization_of: dict[str, str]) -> dict[str, Decimal]:
    """Per participant, what `earnings` would be paid under `book`'s caps (pure: the facts and the book)."""
    owed = sorted(((e.quarter, e.milestone != "M1", pid, e) for pid, items in earnings.items() for e in items),
                  key=lambda row: (row[0], row[1], row[2]))
    paid: dict[str, Decimal] = defaultdict(lambda: ZERO)
    by_organization: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for quarter, _, pid, earning in owed:
        rules = book.in_force(book.calendar.first_day(quarter))
        if rules is None:
            continue
        organization = organization_of.get(pid, pid)
        amount = payable(earning.amount, paid[pid], by_organization[organization] - paid[pid], rules.program.cap,
                         rules.program.cap_scope)
        paid[pid] += amount
        by_organization[organization] += amount
    return {pid: paid[pid] for pid in earnings}


def what_if(app: object, context: WhatIfContext) -> None:
    """The service's what-if hook: each participant's dollars, cut to the cap, under the current and proposed book."""
    assert isinstance(app, Payments)
    current, proposed = context.books(app.rulebook())
    organization_of = {str(a.participant_id): str(a.organization) for a in app.accounts() if a.registered}
    now = paid_under(current, context.earnings["current"], organization_of)
    then = paid_under(proposed, context.earnings["proposed"], organization_of)
    for pid, row in context.participants.items():
        before, after = now.get(pid, ZERO), then.get(pid, ZERO)
        row.update(current=str(before), proposed=str(after), difference=str(after - before))

