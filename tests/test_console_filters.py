"""The participants list's "amount paid" filter without a browser (issue 15 §2, "participants with search and filters
(type, county, status, Milestone 1, amount paid)"): the bounds staff type, and who falls within them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from console.filters import InvalidAmount, dollars, includes_zero, within


def test_amounts_are_typed_as_dollars_with_commas_or_a_sign_and_empty_is_no_bound() -> None:
    assert dollars("10,000", "Paid at least") == Decimal("10000.00")
    assert dollars(" $400.5 ", "Paid at least") == Decimal("400.50")
    assert dollars("", "Paid at least") is None


@pytest.mark.parametrize("text", ["ten", "-1", "NaN", "Infinity", "1e13"])
def test_an_amount_that_is_not_dollars_names_its_field(text: str) -> None:
    with pytest.raises(InvalidAmount, match=r"^Paid at most: enter"):
        dollars(text, "Paid at most")


def test_a_participant_without_money_in_payments_is_within_bounds_that_include_zero_only() -> None:
    matched, paid_some = {"a", "zero-account"}, {"a", "b"}
    assert includes_zero(None) and includes_zero(Decimal(0))
    assert not includes_zero(Decimal("0.01"))
    up_to_500 = within(matched, paid_some)  # a: $300 (matched), b: $10,000 (paid, not matched), c: no account
    assert [up_to_500(pid) for pid in ("a", "b", "c", "zero-account")] == [True, False, True, True]
    over_100 = within({"a", "b"}, None)
    assert [over_100(pid) for pid in ("a", "b", "c")] == [True, True, False]
