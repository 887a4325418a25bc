"""Member spans and attributions, and the roster parsers: bad rows reported by line, good rows kept."""

from __future__ import annotations

import json
from datetime import date

import pytest
from enrollment.members import PCP, QIP, InvalidMember, Member, normalise_cin
from enrollment.rosters import (
    AttributionRow,
    EligibilityRow,
    RowError,
    UnreadableFile,
    attribution_atr,
    attribution_csv,
    eligibility_834,
    eligibility_csv,
)

from tests.x12_834 import Enrollee, build_834, cin

HEADER = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
          "other_health_coverage,dual_eligible")


def test_cin_format_and_bic_ids() -> None:
    assert normalise_cin(" 12345678a ") == "12345678A"
    assert normalise_cin("12345678A12345") == "12345678A"  # a BIC id starts with the CIN
    for bad in ("1234567A", "123456789", "ABCDEFGHI", ""):
        with pytest.raises(InvalidMember):
            normalise_cin(bad)


def test_spans_open_change_and_close_as_events_never_overwrites() -> None:
    member = Member("12345678A")
    assert member.record_eligibility(date(2024, 1, 1), None, "1H", False, False, "f1") is True
    assert member.record_eligibility(date(2024, 1, 1), None, "1H", False, False, "f1") is False  # same fact again
    member.record_eligibility(date(2024, 1, 1), date(2024, 6, 30), "1H", False, False, "f2")  # closes
    member.record_eligibility(date(2024, 1, 1), date(2024, 6, 30), "M1", False, True, "f3")  # aid code changes
    member.record_eligibility(date(2024, 9, 1), None, "M1", False, True, "f3")  # a new span
    assert [type(e).__name__ for e in member.collect_events()] == [
        "MemberRegistered", "EligibilityOpened", "EligibilityClosed", "EligibilityChanged", "EligibilityOpened"]
    assert member.eligibility_on(date(2024, 6, 30))["aid_code"] == "M1"  # type: ignore[index]
    assert member.eligibility_on(date(2024, 7, 1)) is None
    assert member.eligibility_on(date(2025, 1, 1))["start"] == date(2024, 9, 1)  # type: ignore[index]
    assert member.terminate(date(2024, 12, 31), "term") is True
    assert member.eligibility_on(date(2025, 1, 1)) is None


def test_attribution_answers_who_on_a_date() -> None:
    member = Member("12345678A")
    member.attribute(PCP, "participant-1", date(2025, 1, 1), date(2025, 3, 31), "a")
    member.attribute(PCP, "participant-2", date(2025, 4, 1), None, "a")
    member.attribute(QIP, "natividad", date(2025, 1, 1), None, "b")
    assert member.attributed_on(PCP, date(2025, 3, 31)) == "participant-1"
    assert member.attributed_on(PCP, date(2025, 4, 1)) == "participant-2"
    assert member.attributed_on(PCP, date(2024, 12, 31)) is None
    assert member.attributed_on(QIP, date(2025, 6, 1)) == "natividad"
    assert member.attribute(PCP, "participant-2", date(2025, 4, 1), None, "again") is False


def test_eligibility_csv_reports_bad_rows_by_line_and_keeps_good_ones() -> None:
    text = "\n".join([HEADER, "12345678A,DOE,JANE,1980-01-01,2024-01-01,,1H,N,N",
                      "1234,DOE,JOHN,1980-01-01,2024-01-01,,1H,N,N",
                      "12345679B,ROE,RITA,1980-01-01,2024-02-30,,1H,N,N",
                      "12345670C,POE,PAT,19800101,20240101,20231231,1H,Y,Y",
                      "12345671D,LOE,LEE,1980-01-01,2024-01-01,,1H,maybe,N"])
    rows = list(eligibility_csv(text))
    assert isinstance(rows[0], EligibilityRow) and rows[0].cin == "12345678A"
    assert [(r.line, r.reason) for r in rows if isinstance(r, RowError)] == [
        (3, "member_id: not a Medi-Cal CIN (8 digits then a letter)"),
        (4, "eligibility_start: not a valid date (YYYY-MM-DD or CCYYMMDD)"),
        (5, "eligibility_end: before eligibility_start"),
        (6, "other_health_coverage: not a yes/no flag")]
    assert all("DOE" not in r.reason and "1234" not in r.reason for r in rows if isinstance(r, RowError))


def test_a_csv_with_the_wrong_columns_is_unreadable() -> None:
    with pytest.raises(UnreadableFile, match="missing aid_code"):
        list(eligibility_csv("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,"
                             "other_health_coverage,dual_eligible\n"))


def test_834_enrollment_change_and_termination() -> None:
    text = build_834([Enrollee(cin(1)), Enrollee(cin(2), end=date(2024, 6, 30), ohc=True, medicare_id="1EG4TE5MK73",
                                                 frozen=[cin(99)]),
                      Enrollee(cin(3), maintenance="024", start=None, end=date(2024, 3, 31))])
    rows = [r for r in eligibility_834(text) if isinstance(r, EligibilityRow)]
    first, second, third = rows  # no row error: all three are eligibility rows
    assert (first.cin, first.start, first.end, first.aid_code, first.terminated) == (cin(1), date(2024, 1, 1), None, "1H", False)
    assert (second.other_health_coverage, second.dual_eligible, second.frozen_cins) == (True, True, (cin(99),))
    assert (third.terminated, third.end) == (True, date(2024, 3, 31))


def test_malformed_834_segments_are_reported_by_segment_and_the_rest_kept() -> None:
    text = build_834([Enrollee(cin(1)), Enrollee("12X"), Enrollee(cin(2), start=None), Enrollee(cin(3), maintenance="999"),
                      Enrollee(cin(4))])
    rows = list(eligibility_834(text))
    assert [r.cin for r in rows if isinstance(r, EligibilityRow)] == [cin(1), cin(4)]
    assert [r.reason for r in rows if isinstance(r, RowError)] == [
        "REF*0F: not a Medi-Cal CIN (8 digits then a letter)", "DTP*348 or DTP*356: missing",
        "INS03: unknown maintenance type code"]
    assert all(r.line > 0 for r in rows)


@pytest.mark.parametrize("text", ["hello", "", "GS*BE*X~"])
def test_a_file_that_is_not_x12_is_unreadable(text: str) -> None:
    with pytest.raises(UnreadableFile):
        list(eligibility_834(text))


def test_attribution_csv() -> None:
    rows = list(attribution_csv("member_id,kind,assignee,start,end\n12345678A,pcp,p1,2025-01-01,\n"
                                "12345678A,qip,natividad,2025-01-01,2025-12-31\n12345678A,dental,x,2025-01-01,\n"))
    assert rows[:2] == [AttributionRow(2, "12345678A", PCP, "p1", date(2025, 1, 1), None),
                        AttributionRow(3, "12345678A", QIP, "natividad", date(2025, 1, 1), date(2025, 12, 31))]
    assert rows[2] == RowError(4, "kind: must be pcp or qip")


def test_da_vinci_atr_group() -> None:
    group = {"resourceType": "Group", "type": "person", "actual": True, "active": True,
             "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
             "member": [
                 {"entity": {"reference": "Patient/1", "identifier": {"value": "12345678A"}},
                  "period": {"start": "2025-01-01"}},
                 {"extension": [{"url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributedProvider",
                                 "valueReference": {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi",
                                                                   "value": "1999999999"}}}],
                  "entity": {"reference": "Patient/12345679B"}, "period": {"start": "2025-01-01", "end": "2025-06-30"}},
                 {"entity": {"reference": "Patient/3"}, "period": {"start": "2025-01-01"}}]}
    rows = list(attribution_atr(json.dumps(group), PCP))
    assert rows == [AttributionRow(1, "12345678A", PCP, "1234567893", date(2025, 1, 1), None),
                    AttributionRow(2, "12345679B", PCP, "1999999999", date(2025, 1, 1), date(2025, 6, 30)),
                    RowError(3, "member.entity: not a Medi-Cal CIN (8 digits then a letter)")]
    with pytest.raises(UnreadableFile):
        list(attribution_atr('{"resourceType": "Patient"}', PCP))
