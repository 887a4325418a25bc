"""The participants list's "amount paid" filter (issue 15 §2): the bounds staff type, as dollars. The console's read
model holds each participant's total paid (a participant never paid was paid $0) and filters on it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from dsi_shared.projections_query import MAX_DOLLARS as MAX_FILTER_DOLLARS

MAX_DOLLARS = Decimal(MAX_FILTER_DOLLARS)  # the services' own bound on a dollar filter


class InvalidAmount(ValueError):
    pass


def dollars(text: str, label: str) -> Decimal | None:
    """`10000`, `10,000.50` or `$400` → a non-negative amount; empty → None (no bound)."""
    cleaned = text.strip().replace(",", "").removeprefix("$")
    if not cleaned:
        return None
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidAmount(f"{label}: enter an amount in dollars, e.g. 10000") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_DOLLARS:
        raise InvalidAmount(f"{label}: enter an amount between $0 and ${MAX_DOLLARS:,}")
    return amount.quantize(Decimal("0.01"))
