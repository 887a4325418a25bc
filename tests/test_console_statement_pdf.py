"""A provider's statement for a quarter as a PDF (issue 15 §3): the rows of the printable page, in plain words, only
that quarter's, with the total paid and the headroom to the cap; rendered by reportlab."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from console.statement_pdf import render, rows
from dsi_shared.plantime import QuarterCalendar

CALENDAR = QuarterCalendar.parse(["01-01", "04-01", "07-01", "10-01"])


def shown() -> dict[str, Any]:
    """A participant page as `reads.participant` returns it: an SNF with one late file in 2025Q4, one credited file
    in 2025Q3, Milestone 1 and a 2025Q4 payment."""
    late = {"received_at": "2025-11-04T09:30:00-08:00", "verdict": "rejected", "amount": None,
            "facts": {"event_type": "A01", "event_time": "2025-11-01T08:00:00-07:00"},
            "reasons": ["late", "not_a_member"], "credit": None}
    credited = {"received_at": "2025-08-04T09:30:00-07:00", "verdict": "credited", "amount": "400.00",
                "facts": {"event_type": "A03", "event_time": "2025-08-03T08:00:00-07:00"}, "reasons": [],
                "credit": {"quarter": "2025Q3"}}
    return {"participant": {"id": "6b1f0c2e-0000-4000-8000-000000000001", "legal_name": "Sunrise Skilled Nursing",
                            "provider_type": "skilled_nursing", "npi": "1234567893",
                            "schedule": {"earning_rule": {"timeliness_hours": 72}}},
            "progress": {"evaluations": [
                {"quarter": "2025Q4", "earned": "400.00", "state": "validated", "figures": {"qualifying_files": [1]}},
                {"quarter": "2025Q3", "earned": "400.00", "state": "validated", "figures": {}}]},
            "submissions": [late, credited],
            "statement": {"total_paid": "10800.00", "cap": "40000.00", "remaining": "29200.00", "payments": [
                {"milestone": "M1", "quarter": "2025Q2", "amount": "10000.00", "covers": ["milestone:M1"]},
                {"milestone": "SNF:2025Q4", "quarter": "2025Q4", "amount": "400.00", "covers": ["submission:x"],
                 "cut_reason": None}]}}


def test_a_quarters_statement_holds_that_quarters_files_in_plain_words_its_evaluation_and_payments() -> None:
    statement = rows(shown(), "2025Q4", CALENDAR)
    assert statement.title == "Sunrise Skilled Nursing: statement for 2025Q4"
    [file] = statement.files  # the 2025Q3 file is not in the 2025Q4 statement
    assert file[2] == "rejected" and file[1].startswith("admission")
    assert file[3] == ("received 74 hours after the admission; the limit is 72; "
                       "the patient was not a plan member on the day of the event")
    assert statement.quarters == [("2025Q4", "$400.00", "validated", "qualifying files: 1")]
    assert statement.payments == [("SNF:2025Q4", "2025Q4", "$400.00", "1 file")]
    assert statement.totals == "Paid in all $10,800.00; the program pays at most $40,000.00, so $29,200.00 remains."


def test_the_statement_renders_as_a_pdf_titled_with_the_quarter() -> None:
    document = render(rows(shown(), "2025Q4", CALENDAR), datetime(2026, 1, 5, 9, tzinfo=UTC))
    assert document.startswith(b"%PDF-") and document.rstrip().endswith(b"%%EOF")
    assert b"statement for 2025Q4" in document  # the document's title (its info dictionary)
