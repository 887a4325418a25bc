"""The what-if's dollars are cut to the cap by payments' own rule (`payable`) and scope, as payments would pay them
(issue 11 §3, §5): "Participants will be eligible to continue earning so long as the maximum of $40,000 has not been
reached", and whether a later round "shares the organization's $40,000" is the rules' `cap_scope`."""

from __future__ import annotations

from decimal import Decimal

from dsi_shared.audit import Earning
from dsi_shared.plantime import Quarter
from payments.whatif import paid_under

from tests.rulesdoc import amended, book

FIRST, LATER, OTHER = "first-round", "later-round", "unrelated"
EARNED = {FIRST: [Earning(Quarter.parse("2024Q2"), "M1", Decimal("10000.00")),
                  Earning(Quarter.parse("2025Q4"), "2025Q4", Decimal("1200.00"))],
          LATER: [Earning(Quarter.parse("2025Q1"), "M1", Decimal("10000.00"))],
          OTHER: [Earning(Quarter.parse("2025Q1"), "M1", Decimal("10000.00"))]}


def with_cap(scope: str) -> dict[str, Decimal]:
    rules = book(amended("2024.9", "2024-01-01", {"program.cap": "15000.00", "program.cap_scope": scope}))
    return paid_under(rules, EARNED, {FIRST: FIRST, LATER: FIRST, OTHER: OTHER})


def test_under_organization_scope_a_later_round_shares_the_organizations_cap_in_the_order_owed() -> None:
    assert with_cap("organization") == {FIRST: Decimal("10000.00"), LATER: Decimal("5000.00"),
                                        OTHER: Decimal("10000.00")}  # the first round's 2025Q4 files: cap reached


def test_under_participation_scope_each_participation_has_its_own_cap() -> None:
    assert with_cap("participation") == {FIRST: Decimal("11200.00"), LATER: Decimal("10000.00"),
                                         OTHER: Decimal("10000.00")}


def test_with_the_shipped_cap_nobody_here_reaches_it() -> None:
    assert paid_under(book(), EARNED, {LATER: FIRST}) == {FIRST: Decimal("11200.00"), LATER: Decimal("10000.00"),
                                                          OTHER: Decimal("10000.00")}
