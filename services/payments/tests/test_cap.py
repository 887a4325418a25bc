"""The $40,000 cap and pay-once rule (DOMAIN.md A4), as pure rules."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st
from payments.domain import PaymentAccount, capped

from tests.rulesdoc import packaged

D = Decimal
CAP = D(packaged()["program"]["cap"])  # the shipped rules' cap: $40,000


def test_the_payment_that_reaches_the_cap_is_cut_to_the_remainder_and_later_ones_are_zero() -> None:
    account = PaymentAccount(uuid4())
    for milestone in ("M1", "M2", "M3"):
        account.pay(milestone, D("10000.00"), "2025Q1", "r1", source_event=milestone, cap=CAP)
    account.pay("M4", D("10400.00"), "2025Q2", "r1", source_event="M4", cap=CAP)
    account.pay("M5", D("400.00"), "2025Q3", "r1", source_event="M5", cap=CAP)
    assert [(p["amount"], p["cut_reason"]) for p in account.payments[-2:]] == [
        (D("10000.00"), "cut to the $40,000.00 cap"), (D("0.00"), "cap reached")]
    assert (account.total_paid, account.remaining(CAP)) == (CAP, D("0.00"))


def test_cap_edges() -> None:
    assert capped(D("400.00"), D("39600.00"), CAP) == D("400.00")
    assert capped(D("400.00"), D("39800.00"), CAP) == D("200.00")
    assert capped(D("400.00"), D("40000.00"), CAP) == D("0.00")


def test_the_cap_is_the_rules_number_and_each_payment_records_it() -> None:
    """"the program cap ($40,000)" is rules data: a version with another cap cuts payments to it."""
    account = PaymentAccount(uuid4())
    account.pay("M1", D("10000.00"), "2024Q2", "r1", source_event="a", cap=D("12000.00"))
    account.pay("M2", D("10000.00"), "2025Q1", "r2", source_event="b", cap=D("12000.00"))
    assert [p["amount"] for p in account.payments] == [D("10000.00"), D("2000.00")]
    assert account.payments[-1]["cut_reason"] == "cut to the $12,000.00 cap" and account.cap == D("12000.00")


def test_a_milestone_is_paid_once() -> None:
    account = PaymentAccount(uuid4())
    assert account.pay("M1", D("10000.00"), "2024Q2", "r1", source_event="a", cap=CAP) is True
    assert account.pay("M1", D("10000.00"), "2024Q2", "r1", source_event="b", cap=CAP) is False
    assert account.total_paid == D("10000.00")


amounts = st.decimals(min_value=0, max_value=15000, places=2)


@given(st.lists(st.tuples(st.sampled_from([f"M{i}" for i in range(8)]), amounts), max_size=30))
def test_total_paid_is_min_of_cap_and_earned_and_nothing_is_paid_twice(events: list[tuple[str, Decimal]]) -> None:
    account = PaymentAccount(uuid4())
    earned: dict[str, Decimal] = {}
    for milestone, amount in events:
        account.pay(milestone, amount, "2025Q1", "r1", source_event=milestone, cap=CAP)
        earned.setdefault(milestone, amount)
        assert account.total_paid <= CAP
    assert account.total_paid == min(CAP, sum(earned.values(), D("0")))
    assert len({p["milestone"] for p in account.payments}) == len(account.payments)
