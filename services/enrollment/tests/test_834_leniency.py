"""X12 834 as real senders write it (shapes from pyx12's test files: a family enrollment, a termination, a state
Medicaid MMIS file): member-level eligibility dates, blank aid codes, terminations the plan cannot apply, and a
report whose counts add up."""

from __future__ import annotations

from datetime import date
from typing import Any

from enrollment.application import Enrollment
from enrollment.rosters import AID_CODE_UNKNOWN, EligibilityRow, RowError, eligibility_834
from fastapi.testclient import TestClient

from tests.x12_834 import Enrollee, build_834, cin

STAFF = {"Authorization": "Bearer staff"}  # the `api` fixture's staff token
X12 = {**STAFF, "content-type": "application/edi-x12"}


def _import(api: TestClient, enrollees: list[Enrollee], control: int = 1) -> dict[str, Any]:
    response = api.post("/members/import", content=build_834(enrollees, control=control), headers=X12)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _spans(api: TestClient, n: int) -> list[dict[str, Any]]:
    return list(api.get(f"/members/{cin(n)}", params={"on": "2024-06-01"}, headers=STAFF).json()["spans"])


def test_a_dependent_with_only_eligibility_begin_356_is_accepted_with_the_qualifier_recorded(api: TestClient) -> None:
    family = [Enrollee(cin(1)),
              Enrollee(cin(2), dependent=True, coverage=False, start=None, eligibility_start=date(2024, 2, 1))]
    report = _import(api, family)
    assert (report["accepted"], report["rejected"]) == (2, 0)
    (span,) = _spans(api, 2)
    assert (span["start"], span["dates_from"]) == ("2024-02-01", {"start": "DTP*356", "end": None})
    assert _spans(api, 1)[0]["dates_from"] == {"start": "DTP*348", "end": None}


def test_834_eligibility_end_357_ends_the_span_and_benefit_dates_win_over_eligibility_dates() -> None:
    text = build_834([
        Enrollee(cin(1), start=None, eligibility_start=date(2024, 1, 1), eligibility_end=date(2024, 6, 30)),
        Enrollee(cin(2), start=date(2024, 3, 1), eligibility_start=date(2024, 1, 1), eligibility_end=date(2024, 12, 31),
                 end=date(2024, 9, 30)),
        Enrollee(cin(3), maintenance="024", start=None, eligibility_end=date(2024, 4, 30))])
    rows = [r for r in eligibility_834(text) if isinstance(r, EligibilityRow)]
    assert [(r.start, r.end, r.start_from, r.end_from) for r in rows] == [
        (date(2024, 1, 1), date(2024, 6, 30), "DTP*356", "DTP*357"),
        (date(2024, 3, 1), date(2024, 9, 30), "DTP*348", "DTP*349"),
        (None, date(2024, 4, 30), None, "DTP*357")]
    assert rows[2].terminated


def test_834_dates_of_a_pcp_loop_or_a_reporting_category_are_not_the_members_dates() -> None:
    text = build_834([Enrollee(cin(1), pcp_since=date(2025, 1, 1), reporting_category=True),
                      Enrollee(cin(2), start=None, eligibility_start=date(2024, 5, 1), pcp_since=date(2025, 1, 1))])
    first, second = eligibility_834(text)
    assert isinstance(first, EligibilityRow) and isinstance(second, EligibilityRow)
    assert (first.start, first.end) == (date(2024, 1, 1), None)
    assert (second.start, second.start_from) == (date(2024, 5, 1), "DTP*356")


def test_834_missing_begin_dates_name_both_qualifiers() -> None:
    (row,) = eligibility_834(build_834([Enrollee(cin(1), start=None)]))
    assert isinstance(row, RowError) and row.reason == "DTP*348 or DTP*356: missing"


def test_a_blank_aid_code_keeps_the_member_with_the_code_unknown_and_the_line_says_so(api: TestClient) -> None:
    report = _import(api, [Enrollee(cin(1)), Enrollee(cin(2), aid_code="")])
    assert (report["accepted"], report["added"], report["rejected"]) == (2, 2, 0)
    assert report["notes"] == [{"line": 15, "outcome": "added", "note": AID_CODE_UNKNOWN}]
    assert report["leniencies"] == {AID_CODE_UNKNOWN: 1}
    member = api.get(f"/members/{cin(2)}", params={"on": "2024-06-01"}, headers=STAFF).json()
    assert (member["member_on_date"], member["eligibility"]["aid_code"]) == (True, None)
    later = _import(api, [Enrollee(cin(2), aid_code="1h")], control=2)  # the code arrives later: a change
    assert (later["changed"], later["notes"]) == (1, [])
    assert _spans(api, 2)[0]["aid_code"] == "1H"


def test_a_termination_for_a_member_without_a_span_is_not_applied_with_the_reason(
        api: TestClient, enrollment_app: Enrollment) -> None:
    _import(api, [Enrollee(cin(2), start=date(2024, 5, 1))])
    report = _import(api, [Enrollee(cin(1), maintenance="024", start=None, end=date(2024, 3, 31)),
                           Enrollee(cin(2), maintenance="024", start=None, end=date(2024, 3, 31))], control=2)
    assert (report["accepted"], report["terminated"], report["not_applied"], report["members_changed"]) == (0, 0, 2, 0)
    reason = "INS03 024: the plan has no eligibility span for the member on or before the termination date"
    assert [(n["outcome"], n["note"]) for n in report["notes"]] == [("not_applied", reason)] * 2
    assert report["leniencies"] == {}
    assert api.get(f"/members/{cin(1)}", headers=STAFF).status_code == 404  # no member registered for it
    assert _spans(api, 2)[0]["end"] is None


def test_the_834_report_counts_every_line_exactly_once(api: TestClient) -> None:
    _import(api, [Enrollee(cin(1)), Enrollee(cin(2)), Enrollee(cin(3)), Enrollee(cin(4), end=date(2024, 1, 31))])
    report = _import(api, [
        Enrollee(cin(1)),  # the same facts again
        Enrollee(cin(2), aid_code="M1", maintenance="001"),
        Enrollee(cin(3), maintenance="024", start=None, end=date(2024, 3, 31), eligibility_end=date(2024, 3, 31)),
        Enrollee(cin(4), maintenance="024", start=None, end=date(2024, 3, 31)),  # already ended: nothing to close
        Enrollee(cin(5)),
        Enrollee(cin(6), maintenance="024", start=None, end=date(2024, 3, 31)),
        Enrollee("NOT-A-CIN")], control=2)
    counts = {k: report[k] for k in ("rows", "accepted", "added", "changed", "terminated", "unchanged", "not_applied",
                                     "rejected")}
    assert counts == {"rows": 7, "accepted": 5, "added": 1, "changed": 1, "terminated": 1, "unchanged": 2,
                      "not_applied": 1, "rejected": 1}
    assert report["rows"] == report["accepted"] + report["not_applied"] + report["rejected"]
    closed = _spans(api, 3)[0]
    assert (closed["end"], closed["dates_from"]) == ("2024-03-31", {"start": "DTP*348", "end": "DTP*349"})


STATE_MEDICAID_MEMBER = """INS*Y*18*001*AI*A*C**AC**N~REF*0F*{cin}~REF*23*CASE23~REF*F6*1EG4TE5MK73~DTP*356*D8*20240901~
DTP*357*D8*20250331~NM1*74*1*ROE*RITA*M***34*000000000~PER*IP**TE*5555550100~N3*1 ELM ST~N4*SALINAS*CA*93901**CY*053~
DMG*D8*19830719*F~AMT*P3*0~LUI*LE*ENG**7~HD*001**HMO**IND~REF*17*D4~COB*U*D183*5~LS*2700~LX*1~
N1*75*PREVIOUS PMP END DATE~DTP*007*D8*20240615~LX*2~N1*75*END REASON~REF*17*11~LE*2700~"""


def test_a_state_medicaid_member_loop_with_only_356_357_and_a_blank_aid_code_is_read() -> None:
    """The shape of a state MMIS 834 (pyx12's Oregon test file): member-level 356/357 only, NM1*74, HD04 blank, a
    COB loop and a loop 2700 reporting category with its own DTP*007."""
    text = build_834([]).replace("SE*", STATE_MEDICAID_MEMBER.format(cin=cin(7)).replace("\n", "") + "SE*", 1)
    (row,) = eligibility_834(text)
    assert isinstance(row, EligibilityRow)
    assert (row.cin, row.start, row.end, row.start_from, row.end_from) == (
        cin(7), date(2024, 9, 1), date(2025, 3, 31), "DTP*356", "DTP*357")
    assert (row.aid_code, row.notes, row.other_health_coverage, row.dual_eligible) == (None, (AID_CODE_UNKNOWN,), True, True)
