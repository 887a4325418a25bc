"""The rules document's shape and effective dating (DOMAIN.md A4: "Rules are effective-dated data")."""

from __future__ import annotations

from datetime import date

import pytest
from dsi_shared.rulebook import InvalidRulesDocument, RuleBook, RulesCopy, RulesDocument, parse_document

from tests.rulesdoc import amended, packaged


def version(name: str, effective_from: str) -> RulesDocument:
    return RulesDocument.model_validate(amended(name, effective_from, {}))


def test_the_version_in_force_is_the_latest_effective_on_that_day_and_a_later_correction_wins_its_date() -> None:
    """"A version applies from its effective_from, also to participants who enrolled before it was published (a
    correction reaches them); each decision uses the version in force on the date it concerns." """
    shipped, next_year = version("2024.1", "2024-01-01"), version("2025.1", "2025-01-01")
    correction = version("2024.2", "2024-10-01")  # published after 2025.1, effective earlier
    rules = RuleBook((shipped, next_year, correction))
    assert rules.in_force(date(2023, 12, 31)) is None
    assert rules.in_force(date(2024, 9, 30)) == shipped
    assert rules.in_force(date(2024, 10, 1)) == correction
    assert rules.in_force(date(2025, 1, 1)) == next_year  # the correction does not reach past the next version
    same_day = version("2024.3", "2024-10-01")
    assert RuleBook((shipped, correction, same_day)).in_force(date(2024, 12, 1)) == same_day  # published last


@pytest.mark.parametrize(("path", "value", "named"), [
    ("provider_types.skilled_nursing.earning_rule.kind", "per_visit", "provider_types.skilled_nursing.earning_rule"),
    ("provider_types.primary_care.earning_rule.thresholds", [],
     "provider_types.primary_care.earning_rule.coverage_per_period.thresholds"),
    ("program.cap", "-1", "program.cap"),
    ("effective_from", "2024-02-30", "effective_from"),
    ("provider_types.skilled_nursing.earning_rule.cancel_events", {"A11": "A08"},
     "provider_types.skilled_nursing.earning_rule.per_qualifying_file"),
])
def test_a_malformed_document_is_refused_naming_the_field(path: str, value: object, named: str) -> None:
    with pytest.raises(InvalidRulesDocument, match=named.replace(".", r"\.")):
        parse_document(amended("x1", "2024-01-01", {path: value}))


def test_a_missing_parameter_is_named() -> None:
    document = packaged()
    del document["provider_types"]["skilled_nursing"]["earning_rule"]["timeliness_hours"]
    with pytest.raises(InvalidRulesDocument, match=r"earning_rule\.per_qualifying_file\.timeliness_hours: missing"):
        parse_document(document)
    del document["effective_from"]
    with pytest.raises(InvalidRulesDocument, match="effective_from: missing"):
        parse_document(document)


def test_a_services_copy_keeps_each_version_once_and_skips_documents_of_an_older_schema() -> None:
    copy = RulesCopy()
    assert copy.note(packaged()) is True
    assert copy.note(packaged()) is False
    legacy = {"version": "2023.1", "service_area_counties": ["Monterey"], "provider_types": {}}
    assert copy.note(legacy) is False
    assert [v.version for v in copy.book.versions] == ["2024.1"]
