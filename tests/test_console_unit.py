"""The console's parts without a browser: provider tokens in DSI_TOKENS, the signed session cookie, verdict reasons
in plain words, what a provider still needs for Milestone 1, the chart, and the what-if's form and jobs."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from console import plain
from console.chart import paid_chart
from console.sessions import Sessions
from console.whatif import KEEP_JOBS, InvalidProposal, WhatIfIn, WhatIfJobs, from_form
from dsi_shared.config import TokenGrant, parse_grants
from dsi_shared.http import Auth
from dsi_shared.rulebook import calendar_of

from tests.harness import eventually
from tests.rulesdoc import amended, packaged


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


def test_the_what_if_form_takes_the_bare_document_the_publish_body_or_a_published_version() -> None:
    """"`POST /program-rules/what-if` for staff": the console's form sends what that route takes."""
    document = amended("2025.9", "2025-01-01", {})
    bare = from_form({"document": json.dumps(document), "from": "2025Q1", "to": ""})
    wrapped = from_form({"document": json.dumps({"rules": document, "reason": "48 hours?"})})
    assert bare.rules == wrapped.rules == document and (bare.from_, bare.to) == ("2025Q1", None)
    assert from_form({"published": "2024.2", "document": ""}).published == "2024.2"
    with pytest.raises(InvalidProposal, match="not JSON"):
        from_form({"document": "{not json"})
    with pytest.raises(InvalidProposal, match="to: string_pattern_mismatch"):
        from_form({"published": "2024.2", "to": "2025Q5"})


async def test_a_what_if_job_that_fails_says_why_without_values_and_only_the_latest_jobs_are_kept() -> None:
    def failing(*_: object) -> dict[str, object]:
        raise KeyError("93000000A")  # a value in an exception is never shown

    jobs = WhatIfJobs(run=failing)
    body = WhatIfIn.model_validate({"rules": amended("2025.9", "2025-01-01", {})})
    started = [await jobs.start(body) for _ in range(KEEP_JOBS + 1)]

    async def settled() -> bool:
        return all(job.status != "running" for job in started)

    await eventually(settled, timeout=10)
    assert (started[-1].status, started[-1].error) == ("failed", "KeyError")
    assert jobs.get(started[0].id) is None and jobs.get(started[-1].id) is started[-1]
