"""The console's parts without a browser: provider tokens in DSI_TOKENS, the signed session cookie, verdict reasons
in plain words, what a provider still needs for Milestone 1, and the chart."""

from __future__ import annotations

from decimal import Decimal

import pytest
from console import plain
from console.chart import paid_chart
from console.sessions import Sessions
from dsi_shared.config import TokenGrant, parse_grants
from dsi_shared.http import Auth
from dsi_shared.rulebook import calendar_of

from tests.rulesdoc import packaged


def test_a_provider_token_is_bound_to_its_participant_and_the_other_token_formats_still_parse() -> None:
    grants = parse_grants("p1:provider:3f1c2d9e-0000-4000-8000-000000000001,p2:provider:1234567893,"
                          "a:hie@SUNNY_SNF+backdate,x:y:auditor,s:program-staff")
    assert grants["p1"] == TokenGrant("provider", frozenset(), participant="3f1c2d9e-0000-4000-8000-000000000001")
    assert grants["p2"].participant == "1234567893" and grants["p2"].senders == frozenset()
    assert grants["a"] == TokenGrant("hie", frozenset({"SUNNY_SNF"}), backdate=True)
    assert grants["x:y"].role == "auditor" and grants["s"].senders is None
    assert Auth(grants).role_of("p2") == "provider"  # known to every service, and allowed nothing there


@pytest.mark.parametrize("raw", ["p:provider", "p:provider:", "p:provider@X", "p:provider+backdate"])
def test_a_provider_token_without_its_participant_is_a_configuration_error(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_grants(raw)


def test_the_session_cookie_is_the_signed_session_id_and_a_forged_or_closed_one_is_no_session() -> None:
    sessions = Sessions(b"k" * 32)
    cookie, session = sessions.open("the-token", "auditor", "auditor#1234")
    assert "the-token" not in cookie and sessions.get(cookie) == session
    sid, mac = cookie.rsplit(".", 1)
    assert sessions.get(f"{sid}.{'0' * len(mac)}") is None and sessions.get(sid) is None
    assert Sessions(b"other" * 8).get(cookie) is None  # another secret: not ours
    sessions.close(cookie)
    assert sessions.get(cookie) is None


def test_a_late_file_says_how_late_in_hours_against_the_rules_limit() -> None:
    late = {"received_at": "2025-11-04T19:30:00-08:00",
            "facts": {"event_type": "A03", "event_time": "2025-11-01T18:00:00-07:00"}}
    assert plain.reason_text("late", late, 72) == "received 74 hours after the discharge; the limit is 72"
    assert plain.reason_text("not_a_member", late, 72) == "the patient was not a plan member on the day of the event"
    assert plain.reason_text("incomplete:ORU^R01 missing", late, 72) == "incomplete: ORU^R01 missing"
    assert plain.reason_text("something_new", late, 72) == "something new"
    assert plain.limit_of({"schedule": {"earning_rule": {"timeliness_hours": 72}}}) == 72
    calendar = calendar_of({"current": packaged()})
    assert plain.quarter_of(late, calendar) == "2025Q4"  # the quarter the HIE received it in
    assert plain.quarter_of(late, None) is None  # no rules published yet: no quarter, never a guessed one


def test_what_a_provider_still_needs_for_milestone_1() -> None:
    participant = {"milestone1": {"achieved": False}, "agreements": {
        "LOA": {"status": "accepted"}, "DSA": {"status": "awaiting_review"},
        "HIE": {"status": "rejected", "review": {"reason": "wrong signatory"}}}}
    assert plain.missing_for_milestone1(participant) == [
        "the Data Sharing Agreement is signed and waits for the plan's review",
        "sign the HIE participation agreement again: the plan rejected it (wrong signatory)"]
    assert plain.missing_for_milestone1({"milestone1": {"achieved": True}}) == []


def test_the_paid_chart_is_an_svg_with_a_title_and_a_bar_per_type_and_quarter() -> None:
    svg = str(paid_chart({"2024Q2": {"skilled_nursing": Decimal("10000")},
                          "2025Q4": {"skilled_nursing": Decimal("400"), "primary_care": Decimal("2500")}}))
    assert svg.startswith("<svg") and "Dollars paid per quarter by provider type" in svg
    assert svg.count("<rect") == 3 + 2  # three bars, two legend swatches
    assert "<script" not in svg and "style=" not in svg  # nothing the CSP would refuse
