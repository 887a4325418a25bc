"""The DxF Data Sharing Agreement signatory list (DOMAIN.md A2.4: an agreement is accepted "by the counterparty (an
acceptance event, the state's DSA signatory list)").

The state publishes, as CSV, the organizations that signed the DSA. Columns (header names are case-insensitive,
in any order; any other column is ignored and reported):

| column | required | meaning |
|---|---|---|
| `legal_name` | yes | the signatory's legal name |
| `npi` | no | its NPI (10 digits) |
| `tin` | no | its TIN (9 digits; `94-1234567` is read as `941234567`) |
| `signed_on` | no | the date it signed (`YYYY-MM-DD` or `M/D/YYYY`); without it the list's date |

A participant found by NPI, else by TIN, gets its DSA recorded as signed on `signed_on` and accepted
(`AgreementReviewed`, decided by `dsa-signatory-list`, reason `DSA signatory list <list date>`). One found only by
its normalised legal name (case, punctuation, `Inc`/`LLC`/... suffixes ignored) is a weaker match: the DSA is recorded
as signed and left for staff review. The document id is derived from the row's content, so the same list (or the
same row in next month's list) changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from dsi_shared.identifiers import npi_problem
from dsi_shared.plantime import PLAN_ZONE

from enrollment.domain import BY_DSA_LIST, Participant
from enrollment.rosters import UnreadableFile

COLUMNS = ("legal_name", "npi", "tin", "signed_on")
REQUIRED = ("legal_name",)
MAX_LEGAL_NAME = 300  # as on the interest form
CHANNEL = "dsa-signatory-list"
MAX_REPORTED_ERRORS = 1000
_SUFFIXES = frozenset({"inc", "incorporated", "llc", "llp", "lp", "ltd", "limited", "corp", "corporation", "co",
                       "company", "pc", "pllc", "apc", "pa", "plc"})


@dataclass(frozen=True)
class SignatoryRow:
    line: int
    legal_name: str
    npi: str | None
    tin: str | None
    signed_on: date | None

    @property
    def document_id(self) -> str:
        """Derived from the row's content: the same row in any list is the same document."""
        key = "|".join([self.npi or "", self.tin or "", normalise_name(self.legal_name),
                        self.signed_on.isoformat() if self.signed_on else ""])
        return f"dsa-list:{hashlib.sha256(key.encode()).hexdigest()[:24]}"


@dataclass
class SignatoryList:
    rows: list[SignatoryRow] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    lines: int = 0


def normalise_name(name: str) -> str:
    """`The Sunrise Skilled Nursing, Inc.` and `SUNRISE SKILLED NURSING INC` are one name."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()
    text = text.replace("&", " and ").replace(".", "")
    words = re.sub(r"[^a-z0-9]+", " ", text).split()
    if words and words[0] == "the":
        words = words[1:]
    while words and words[-1] in _SUFFIXES:
        words = words[:-1]
    return " ".join(words)


def parse_signatory_csv(text: str) -> SignatoryList:
    reader = csv.DictReader(io.StringIO(text))
    header = [(h or "").strip().casefold() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UnreadableFile(f"the DSA signatory list must have the columns {', '.join(REQUIRED)} (optional: npi, tin, "
                             f"signed_on); missing {', '.join(missing)}")
    parsed = SignatoryList(ignored_columns=[h for h in header if h not in COLUMNS])
    for raw in reader:
        parsed.lines += 1
        line = reader.line_num
        row = {(k or "").strip().casefold(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
        try:
            parsed.rows.append(_row(line, row))
        except ValueError as exc:
            parsed.errors.append({"line": line, "reason": str(exc)})
    return parsed


def _row(line: int, row: dict[str, str]) -> SignatoryRow:
    legal_name = row.get("legal_name", "")
    npi = row.get("npi") or None
    tin = re.sub(r"[\s-]", "", row.get("tin", "")) or None
    if npi is not None and (problem := npi_problem(npi)) is not None:
        raise ValueError(f"npi: {problem}")
    if tin is not None and not re.fullmatch(r"[0-9]{9}", tin):
        raise ValueError("tin: not 9 digits")
    if not (legal_name or npi or tin):
        raise ValueError("legal_name: missing (and no npi or tin)")
    if len(legal_name) > MAX_LEGAL_NAME:
        raise ValueError(f"legal_name: longer than {MAX_LEGAL_NAME} characters")
    return SignatoryRow(line, legal_name, npi, tin, _date(row.get("signed_on", "")))


def _date(value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return datetime.strptime(value, "%m/%d/%Y").date()
    except ValueError:
        raise ValueError("signed_on: not a date (YYYY-MM-DD or M/D/YYYY)") from None


def match_signatories(parsed: SignatoryList, participants: Iterable[Participant],
                      list_date: date) -> tuple[dict[str, Any], list[Participant]]:
    """Apply the list to the participants; returns the per-row report and the participants changed."""
    everyone = list(participants)
    by_npi: dict[str, list[Participant]] = {}
    by_tin: dict[str, list[Participant]] = {}
    by_name: dict[str, list[Participant]] = {}
    for p in everyone:
        if p.npi:
            by_npi.setdefault(p.npi, []).append(p)
        if p.tin:
            by_tin.setdefault(p.tin, []).append(p)
        by_name.setdefault(normalise_name(p.legal_name), []).append(p)
    reason = f"DSA signatory list {list_date.isoformat()}"
    results: list[dict[str, Any]] = []
    for row in parsed.rows:
        found, matched_by = [], None
        for key, index, how in ((row.npi, by_npi, "npi"), (row.tin, by_tin, "tin"),
                                (normalise_name(row.legal_name), by_name, "name")):
            if key and index.get(key):
                found, matched_by = index[key], how
                break
        if not found:
            results.append({"line": row.line, "matched_by": None, "participant_id": None, "outcome": "unmatched"})
            continue
        signed_at = datetime.combine(row.signed_on or list_date, time(), PLAN_ZONE)
        for participant in found:
            outcome = _apply(participant, row, signed_at, reason, confirmed=matched_by != "name")
            results.append({"line": row.line, "matched_by": matched_by, "participant_id": str(participant.id),
                            "outcome": outcome, "document_id": row.document_id,
                            "needs_staff_confirmation": matched_by == "name"})
    outcomes = [r["outcome"] for r in results]
    report = {
        "list_date": list_date.isoformat(),
        "rows": parsed.lines,
        "matched": sum(1 for r in results if r["matched_by"] in {"npi", "tin"}),
        "weak_matches": sum(1 for r in results if r["matched_by"] == "name"),
        "unmatched": outcomes.count("unmatched"),
        "recorded": outcomes.count("recorded") + outcomes.count("recorded_for_review"),
        "already": outcomes.count("already"),
        "rejected": len(parsed.errors),
        "errors": parsed.errors[:MAX_REPORTED_ERRORS],
        "ignored_columns": parsed.ignored_columns,
        "results": results,
    }
    return report, [p for p in everyone if p.pending_events]


def _apply(participant: Participant, row: SignatoryRow, signed_at: datetime, reason: str, confirmed: bool) -> str:
    """`recorded` (signed and accepted), `recorded_for_review` (signed, awaiting staff) or `already`."""
    known = participant.signature_of("DSA", row.document_id) is not None
    if participant.accepted("DSA") and not known:
        return "already"  # its DSA was accepted on other evidence: the list adds nothing
    signed = participant.sign("DSA", signed_at, row.document_id, CHANNEL)
    if not confirmed:
        return "recorded_for_review" if signed else "already"
    accepted = participant.accept("DSA", row.document_id, reason, BY_DSA_LIST)
    return "recorded" if signed or accepted else "already"
