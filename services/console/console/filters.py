"""The participants list's "amount paid" filter (issue 15 §2), as pure parts: the bounds staff type, and which
participants fall within them given what payments answers. Amounts paid live in payments, participants in
enrollment: the console asks payments which accounts are within the bounds and keeps enrollment's rows among them
(a participant payments has no account for, or none with money, was paid $0)."""

from __future__ import annotations

from collections.abc import Callable, Collection
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


def within(matched: Collection[str], paid_some: Collection[str] | None) -> Callable[[str], bool]:
    """Whether a participant id was paid within the bounds: `matched` are the accounts payments found within them;
    when $0 is within them too, `paid_some` are the accounts paid anything (any other participant was paid $0)."""
    if paid_some is None:
        return lambda pid: pid in matched
    return lambda pid: pid in matched or pid not in paid_some


def includes_zero(low: Decimal | None) -> bool:
    """Whether $0 is within the bounds (amounts are never negative)."""
    return low is None or low <= 0
