"""Eligibility (DOMAIN.md A1) against table A5, case by case, and as a property."""

from __future__ import annotations

import copy
from datetime import date, timedelta
from typing import Any

import pytest
from enrollment.rules import (
    FORM_AFTER_MILESTONE1_DATE,
    HOSPITAL,
    NO_EHR,
    OUTSIDE_SERVICE_AREA,
    TYPE_NOT_IN_PROGRAM,
    UMBRELLA_MEMBER,
    WINDOW_NOT_OPEN,
    InvalidRules,
    ProgramRules,
    default_rules_document,
    eligibility_reasons,
    judge_interest_form,
    parse_rules,
)
from hypothesis import given
from hypothesis import strategies as st

RULES = parse_rules(default_rules_document())
GOOD: dict[str, Any] = {"provider_type": "skilled_nursing", "counties": ["Monterey"], "ehr_product": "PointClickCare",
                        "is_hospital": False, "facility_kind": "snf", "umbrella_group": None, "manages_ehr": True,
                        "submitted_on": date(2024, 3, 1)}

# (type, participation opens, Milestone 1 date: a later form is accepted and flagged) — DOMAIN.md A5
WINDOWS = [("skilled_nursing", date(2024, 1, 1), date(2024, 9, 30)), ("long_term_care", date(2024, 1, 1), date(2024, 9, 30)),
           ("primary_care", date(2024, 7, 1), date(2024, 12, 31)), ("specialist", date(2025, 4, 1), date(2025, 9, 30)),
           ("behavioral_health", date(2025, 10, 1), date(2026, 3, 31)),
           ("ecm_community_supports", date(2026, 4, 1), date(2026, 9, 30))]


def reasons(**changes: Any) -> list[str]:
    return eligibility_reasons(RULES, **{**GOOD, **changes})


def test_a_complete_form_is_eligible() -> None:
    assert reasons() == []


@pytest.mark.parametrize(("provider_type", "opens", "closes"), WINDOWS)
def test_each_provider_type_window_opens_and_closes_on_its_dates(provider_type: str, opens: date, closes: date) -> None:
    assert reasons(provider_type=provider_type, submitted_on=opens - timedelta(days=1)) == [WINDOW_NOT_OPEN]
    assert reasons(provider_type=provider_type, submitted_on=opens) == []
    assert reasons(provider_type=provider_type, submitted_on=closes) == []
    # "the page sets no closing date": a form after the type's Milestone 1 date is eligible, flagged for staff
    late = judge_interest_form(RULES, **{**GOOD, "provider_type": provider_type, "submitted_on": closes + timedelta(days=1)})
    assert (late.reasons, late.flags) == ([], [FORM_AFTER_MILESTONE1_DATE])


def test_schedule_rows_match_table_a5() -> None:
    snf = RULES.provider_type("skilled_nursing")
    pcp = RULES.provider_type("primary_care")
    assert snf and (snf.sign_plan_agreements_by, snf.milestone1_by, snf.data_sharing_starts) == (
        date(2024, 4, 1), date(2024, 9, 30), date(2025, 10, 1))
    assert pcp and (pcp.sign_plan_agreements_by, pcp.milestone1_by, pcp.data_sharing_starts) == (
        date(2024, 10, 1), date(2024, 12, 31), date(2025, 1, 1))
    assert RULES.provider_type("specialist").earning_rule is None  # type: ignore[union-attr]  # "forthcoming"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"provider_type": "pharmacy"}, TYPE_NOT_IN_PROGRAM),
    ({"counties": ["Fresno"]}, OUTSIDE_SERVICE_AREA),
    ({"counties": []}, OUTSIDE_SERVICE_AREA),
    ({"ehr_product": None}, NO_EHR),
    ({"ehr_product": "  "}, NO_EHR),
    ({"is_hospital": True}, HOSPITAL),
    ({"facility_kind": "LTACH"}, HOSPITAL),  # a long-term acute care hospital is a hospital
    ({"umbrella_group": "Valley Health Network", "manages_ehr": False}, UMBRELLA_MEMBER),
])
def test_each_failed_condition_has_its_reason(changes: dict[str, Any], reason: str) -> None:
    assert reasons(**changes) == [reason]


def test_snf_and_ltc_are_not_hospitals_and_the_umbrella_that_manages_the_ehr_is_eligible() -> None:
    assert reasons(facility_kind="ltc") == []
    assert reasons(umbrella_group="Valley Health Network", manages_ehr=True) == []
    assert reasons(counties=["Fresno", "santa cruz"]) == []  # one service-area county suffices


def test_every_reason_is_reported_not_only_the_first() -> None:
    assert reasons(provider_type="pharmacy", counties=["Fresno"], ehr_product=None, is_hospital=True,
                   umbrella_group="X", manages_ehr=False) == [
        TYPE_NOT_IN_PROGRAM, OUTSIDE_SERVICE_AREA, NO_EHR, HOSPITAL, UMBRELLA_MEMBER]


@given(type_in_program=st.booleans(), window_open=st.booleans(), in_area=st.booleans(), has_ehr=st.booleans(),
       hospital=st.booleans(), umbrella_member=st.booleans())
def test_eligible_iff_all_conditions_hold(type_in_program: bool, window_open: bool, in_area: bool, has_ehr: bool,
                                          hospital: bool, umbrella_member: bool) -> None:
    found = reasons(provider_type="primary_care" if type_in_program else "laboratory",
                    submitted_on=date(2024, 8, 1) if window_open else date(2024, 6, 30),
                    counties=["Merced"] if in_area else ["Kern"], ehr_product="Epic" if has_ehr else None,
                    is_hospital=hospital, umbrella_group="Group" if umbrella_member else None,
                    manages_ehr=not umbrella_member)
    all_hold = type_in_program and window_open and in_area and has_ehr and not hospital and not umbrella_member
    assert (found == []) == all_hold


def test_rules_versions_are_added_never_rewritten() -> None:
    record = ProgramRules()
    assert record.publish(default_rules_document(), "packaged") is True
    assert record.publish(default_rules_document(), "again") is False  # the same document: no change
    corrected = copy.deepcopy(default_rules_document())
    corrected["provider_types"]["skilled_nursing"]["data_sharing_starts"] = "2025-07-01"
    with pytest.raises(InvalidRules):
        record.publish(corrected, "same version, other content")
    corrected["version"] = "2024.2"
    corrected["provider_types"]["dental_clinic"] = {**corrected["provider_types"]["specialist"], "label": "Dental"}
    assert record.publish(corrected, "correction + a new provider type, as data") is True
    assert [v["version"] for v in record.versions] == ["2024.1", "2024.2"]
    assert record.current.provider_type("skilled_nursing").data_sharing_starts == date(2025, 7, 1)  # type: ignore[union-attr]
    assert record.book.version("2024.1").provider_type("skilled_nursing").data_sharing_starts == date(2025, 10, 1)  # type: ignore[union-attr]
    dental = {**GOOD, "provider_type": "dental_clinic", "submitted_on": date(2025, 5, 1)}
    assert eligibility_reasons(record.current, **dental) == []


def test_malformed_rules_are_refused() -> None:
    with pytest.raises(InvalidRules):
        ProgramRules().publish({"version": "x"}, "no table")
    broken = copy.deepcopy(default_rules_document())
    broken["version"] = "9"
    broken["provider_types"]["primary_care"]["milestone1_by"] = "2024-02-30"
    with pytest.raises(InvalidRules):
        ProgramRules().publish(broken, "impossible date")
