"""Member identity and assignment rules every service applies the same way (DOMAIN.md; standards-and-law.md §7)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

CIN = re.compile(r"^[0-9]{8}[A-Z]$")  # Medi-Cal Client Index Number: 8 digits and a letter

Span = tuple[date, date | None, str]  # (start, end or open, assignee)

# FHIR Identifier rules for a member's CIN, shared by every reader of FHIR (records, ATR lists). Medi-Cal publishes no
# identifier system URI for the CIN; `CIN_SYSTEM` is the plan's own, which it gives its senders (README "Submissions").
CIN_SYSTEM = "urn:dsi:medi-cal:cin"
CIN_TYPES = frozenset({"MA", "MB", "MC"})  # HL7 v2 table 0203: Medicaid number, member number, Medicare number
V2_0203 = frozenset({"http://terminology.hl7.org/CodeSystem/v2-0203", "http://hl7.org/fhir/v2/0203"})  # R4, STU3


def cin_of(value: object, bic: bool = False) -> str | None:
    """The CIN in an identifier value (upper-cased); a 14-character BIC id (CIN, check digit, Julian issue date) is
    cut to its CIN when `bic`."""
    text = str(value or "").strip().upper()
    if bic and len(text) == 14 and CIN.match(text[:9]):
        text = text[:9]
    return text if CIN.match(text) else None


def cin_of_fhir_identifiers(identifiers: object) -> tuple[str, str] | None:
    """A FHIR resource's CIN and the rule that found it, the most specific rule first: the plan's CIN system, then a
    v2-0203 type MA/MB/MC (a BIC id cut to its CIN under either), then an identifier without a type. An identifier of
    another type (an MRN shaped like a CIN) is never used."""
    found: list[tuple[int, str, str]] = []
    for identifier in identifiers if isinstance(identifiers, list) else [identifiers]:
        if not isinstance(identifier, dict):
            continue
        kind = identifier.get("type")
        coding = kind.get("coding") if isinstance(kind, dict) else None
        coding = [c for c in (coding if isinstance(coding, list) else [coding]) if isinstance(c, dict)]
        codes = sorted({str(c.get("code")) for c in coding if c.get("system") in (None, *V2_0203)} & CIN_TYPES)
        if identifier.get("system") == CIN_SYSTEM:
            rank, rule = 0, "identifier.system"
        elif codes:
            rank, rule = 1, f"identifier.type {codes[0]}"
        elif not coding:
            rank, rule = 2, "identifier without a type"
        else:
            continue
        cin = cin_of(identifier.get("value"), bic=rank < 2)
        if cin is not None:
            found.append((rank, cin, rule + (" (BIC id)" if len(str(identifier.get("value")).strip()) == 14 else "")))
    return min(found)[1:] if found else None


def assignee_on(spans: Iterable[Span], day: date) -> str | None:
    """Who a member is attributed/assigned to on `day`: of the spans covering it, the one that started last
    (a reassignment is a new span; the earlier one need not be closed)."""
    covering = [s for s in spans if s[0] <= day and (s[1] is None or day <= s[1])]
    return max(covering, key=lambda s: s[0])[2] if covering else None
