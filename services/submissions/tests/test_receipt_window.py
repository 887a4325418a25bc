"""A stated receipt time (a `+backdate` token, the HIE's notification) within `DSI_HIE_MAX_DELAY_HOURS` of our
clock, and the AR for a sender the submitter is not bound to (issue 12 §1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from submissions.ack import build_ack
from submissions.application import NOT_BOUND_PROBLEM, stated_receipt_problem

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_stated_receipt_may_be_at_most_the_hie_delay_before_our_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSI_HIE_MAX_DELAY_HOURS", raising=False)
    assert stated_receipt_problem(NOW - timedelta(hours=72), NOW) is None
    assert stated_receipt_problem(NOW, NOW) is None
    assert stated_receipt_problem(NOW + timedelta(minutes=4), NOW) is None  # clock skew
    late = stated_receipt_problem(NOW - timedelta(hours=72, seconds=1), NOW)
    assert late is not None and "72 hours (DSI_HIE_MAX_DELAY_HOURS)" in late
    assert "future" in (stated_receipt_problem(NOW + timedelta(minutes=6), NOW) or "")
    a_year_ago = NOW - timedelta(days=396)  # "a file sent today was credited as received 13 months ago"
    assert stated_receipt_problem(a_year_ago, NOW) is not None
    monkeypatch.setenv("DSI_HIE_MAX_DELAY_HOURS", "9600")
    assert stated_receipt_problem(a_year_ago, NOW) is None


def test_a_sender_not_bound_is_answered_ar_with_unknown_key_identifier() -> None:
    ack = build_ack("AR", "CTRL1", "A01", "SUNNY_SNF", [NOT_BOUND_PROBLEM])
    assert "MSA|AR|CTRL1" in ack
    assert "ERR||MSH^1^4|204^Unknown key identifier^HL70357|E||||MSH-4 sending facility not bound to this sender" in ack
