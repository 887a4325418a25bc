"""Publishing rules versions (issue 11 §1–§2): every number is data, versions are effective-dated, a malformed
document names the field, and a version that lowers signed terms needs staff confirmation."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from enrollment.rules import InvalidRules, LowersSignedTerms, ProgramRules, lowered_terms, parse_rules

from tests.rulesdoc import amended, packaged

STAFF = {"Authorization": "Bearer staff"}


def published() -> ProgramRules:
    record = ProgramRules()
    record.publish(packaged(), "packaged")
    return record


def test_a_correction_effective_earlier_is_published_with_its_reason_and_in_force_from_its_date() -> None:
    """The program page's SNF/LTC data-sharing start "Oct. 1, 2025" is shipped as written; staff correct it to
    2024-10-01 as a new version, effective 2024-10-01."""
    record = published()
    correction = amended("2024.2", "2024-10-01", {"provider_types.skilled_nursing.data_sharing_starts": "2024-10-01"})
    assert record.publish(correction, "SNF data sharing starts the day after the Milestone 1 deadline") is True
    assert record.book.in_force(date(2024, 9, 30)).version == "2024.1"  # type: ignore[union-attr]
    assert record.book.in_force(date(2024, 10, 1)).version == "2024.2"  # type: ignore[union-attr]
    [event] = [e for e in record.collect_events() if type(e).__name__ == "RulesPublished"][-1:]
    assert event.reason.startswith("SNF data sharing") and event.lowered == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "value", "lowered"), [
    ("program.cap", "30000.00", "program.cap lowered"),
    ("provider_types.skilled_nursing.earning_rule.amount", "300.00",
     "provider_types.skilled_nursing.earning_rule.amount lowered"),
    ("provider_types.skilled_nursing.earning_rule.timeliness_hours", 48,
     "provider_types.skilled_nursing.earning_rule.timeliness_hours shortened"),
    ("provider_types.primary_care.earning_rule.thresholds",
     [{"milestone": "M2", "percent": 80}, {"milestone": "M3", "percent": 90}, {"milestone": "M4", "percent": 95}],
     "provider_types.primary_care.earning_rule.thresholds raised"),
    ("provider_types.primary_care.data_sharing_starts", "2025-04-01", "provider_types.primary_care.data_sharing_starts later"),
    ("provider_types.skilled_nursing.milestone1_amount", "5000.00", "provider_types.skilled_nursing.milestone1_amount lowered"),
])
def test_a_version_that_lowers_signed_terms_is_refused_unless_staff_confirm(path: str, value: object, lowered: str) -> None:
    """"A version that would lower what a participant earned under terms it already signed is refused unless staff
    confirm it with a reason (the Letter of Agreement governs)" """
    record = published()
    lower = amended("2025.1", "2025-01-01", {path: value})
    assert lowered in lowered_terms(parse_rules(packaged()), parse_rules(lower))
    with pytest.raises(LowersSignedTerms, match="confirm_lowering"):
        record.publish(lower, "budget")
    assert record.publish(lower, "budget cut agreed with the providers", confirm_lowering=True) is True


def test_a_cap_shared_by_the_organization_instead_of_one_per_participation_needs_confirmation() -> None:
    """Whether a later round "brings its own Milestone 1 and cap or shares the organization's $40,000" is the rules'
    `cap_scope`: going from `participation` to `organization` takes a later round's own cap away, so staff confirm."""
    record = published()
    assert record.publish(amended("2025.1", "2025-01-01", {"program.cap_scope": "participation"}), "own caps") is True
    shared = amended("2025.2", "2025-04-01", {"program.cap_scope": "organization"})
    with pytest.raises(LowersSignedTerms, match=r"program\.cap_scope shared by the organization"):
        record.publish(shared, "one cap per organization")
    assert record.publish(shared, "one cap per organization, agreed", confirm_lowering=True) is True


def test_raising_terms_needs_no_confirmation() -> None:
    record = published()
    richer = amended("2025.1", "2025-01-01", {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 96,
                                              "program.cap": "50000.00"})
    assert record.publish(richer, "more generous") is True


def test_bad_documents_get_422_naming_the_field_and_nothing_is_published() -> None:
    record = published()
    unknown_kind = amended("2025.1", "2025-01-01", {"provider_types.specialist.earning_rule": {"kind": "per_visit"}})
    with pytest.raises(InvalidRules, match=r"provider_types\.specialist\.earning_rule"):
        record.publish(unknown_kind, "x")
    no_reason = amended("2025.2", "2025-01-01", {})
    with pytest.raises(InvalidRules, match="reason"):
        record.publish(no_reason, "  ")
    assert [v["version"] for v in record.versions] == ["2024.1"]


def test_over_http_a_bad_document_is_422_naming_the_field_a_lowering_409_and_nothing_is_published(api: Any) -> None:
    """Done when: "a rules document that is malformed, has ... an unknown earning-rule kind, or a missing parameter
    gets a 422 naming the field; nothing is published." """
    unknown = amended("2025.1", "2025-01-01", {"provider_types.specialist.earning_rule": {"kind": "per_visit"}})
    answer = api.post("/program-rules", json={"rules": unknown, "reason": "x"}, headers=STAFF)
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
    assert "provider_types.specialist.earning_rule" in answer.json()["detail"]
    missing = amended("2025.1", "2025-01-01", {})
    del missing["program"]["cap"]
    answer = api.post("/program-rules", json={"rules": missing, "reason": "x"}, headers=STAFF)
    assert answer.status_code == 422 and "program.cap: missing" in answer.json()["detail"]
    lower = amended("2025.1", "2025-01-01", {"provider_types.skilled_nursing.earning_rule.amount": "300.00"})
    refused = api.post("/program-rules", json={"rules": lower, "reason": "budget"}, headers=STAFF)
    assert refused.status_code == 409 and "amount lowered" in refused.json()["detail"]
    assert api.get("/program-rules", headers=STAFF).json()["versions"] == ["2024.1"]
    confirmed = api.post("/program-rules", json={"rules": lower, "reason": "agreed with providers", "confirm_lowering": True},
                         headers=STAFF)
    assert confirmed.status_code == 201
    shown = api.get("/program-rules", params={"on": "2024-12-31"}, headers=STAFF).json()
    assert (shown["in_force"]["version"], shown["current"]["version"]) == ("2024.1", "2025.1")


STARTS = "program.quarter_calendar.quarter_starts"
FEBRUARY = ["02-01", "05-01", "08-01", "11-01"]


def test_a_version_with_another_quarter_calendar_is_refused_naming_it_and_nothing_is_published() -> None:
    """Quarters already named and paid must never change meaning: the calendar is the same in every version."""
    record = published()
    with pytest.raises(InvalidRules, match=r"program\.quarter_calendar"):
        record.publish(amended("2025.1", "2025-01-01", {STARTS: FEBRUARY}), "fiscal quarters")
    with pytest.raises(InvalidRules, match=r"program\.quarter_calendar"):  # confirming a lowering does not help
        record.publish(amended("2025.1", "2025-01-01", {STARTS: FEBRUARY}), "fiscal quarters", confirm_lowering=True)
    assert [v["version"] for v in record.versions] == ["2024.1"]


def test_the_first_version_may_bring_any_calendar_and_later_versions_keep_it() -> None:
    record = ProgramRules()
    assert record.publish(amended("2024.1", "2024-01-01", {STARTS: FEBRUARY}), "fiscal quarters") is True
    assert record.book.calendar.month_days() == FEBRUARY
    assert record.publish(amended("2025.1", "2025-01-01", {STARTS: FEBRUARY, "program.cap": "50000.00"}), "more") is True
    with pytest.raises(InvalidRules, match=r"program\.quarter_calendar"):
        record.publish(amended("2025.2", "2025-01-01", {}), "back to calendar quarters")


def test_a_version_stored_before_the_calendar_was_rules_data_keeps_jan_apr_jul_oct() -> None:
    """Schema history: a version recorded without `program.quarter_calendar` reads with the calendar it had."""
    older = packaged()
    del older["program"]["quarter_calendar"]
    record = ProgramRules()
    record.rules_published(document=older, reason="recorded before the calendar was rules data")
    assert record.book.calendar.month_days() == ["01-01", "04-01", "07-01", "10-01"]
    assert record.publish(packaged(), "packaged") is False  # the same document: no change
    with pytest.raises(InvalidRules, match=r"program\.quarter_calendar"):
        record.publish(amended("2025.1", "2025-01-01", {STARTS: FEBRUARY}), "fiscal quarters")


def test_over_http_a_changed_or_malformed_calendar_is_422_naming_program_quarter_calendar(api: Any) -> None:
    for starts in (FEBRUARY, ["01-01", "04-01", "07-01"], ["01-01", "02-29", "07-01", "10-01"],
                   ["10-01", "07-01", "04-01", "01-01"]):
        answer = api.post("/program-rules", json={"rules": amended("2025.1", "2025-01-01", {STARTS: starts}),
                                                  "reason": "x"}, headers=STAFF)
        assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        assert "program.quarter_calendar" in answer.json()["detail"]
    assert api.get("/program-rules", headers=STAFF).json()["versions"] == ["2024.1"]
