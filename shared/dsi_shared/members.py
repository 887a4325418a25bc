"""Member identity and assignment rules every service applies the same way (DOMAIN.md; standards-and-law.md §7)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

CIN = re.compile(r"^[0-9]{8}[A-Z]$")  # Medi-Cal Client Index Number: 8 digits and a letter

Span = tuple[date, date | None, str]  # (start, end or open, assignee)


def assignee_on(spans: Iterable[Span], day: date) -> str | None:
    """Who a member is attributed/assigned to on `day`: of the spans covering it, the one that started last
    (a reassignment is a new span; the earlier one need not be closed)."""
    covering = [s for s in spans if s[0] <= day and (s[1] is None or day <= s[1])]
    return max(covering, key=lambda s: s[0])[2] if covering else None
