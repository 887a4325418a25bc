"""The participants list's "amount paid" filter without a browser (issue 15 §2, "participants with search and filters
(type, county, status, Milestone 1, amount paid)"): the bounds staff type (who falls within them is the console's
read model's query: tests/test_console_readmodel.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from console.filters import InvalidAmount, dollars


def test_amounts_are_typed_as_dollars_with_commas_or_a_sign_and_empty_is_no_bound() -> None:
    assert dollars("10,000", "Paid at least") == Decimal("10000.00")
    assert dollars(" $400.5 ", "Paid at least") == Decimal("400.50")
    assert dollars("", "Paid at least") is None


@pytest.mark.parametrize("text", ["ten", "-1", "NaN", "Infinity", "1e13"])
def test_an_amount_that_is_not_dollars_names_its_field(text: str) -> None:
    with pytest.raises(InvalidAmount, match=r"^Paid at most: enter"):
        dollars(text, "Paid at most")
