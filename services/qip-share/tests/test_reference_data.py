"""QIP reference data (DOMAIN.md Part B): code normalisation, value sets from FHIR and CSV, versions never
rewritten, entities and their community partners, and the withholding policy — on the qip-share store (SQLite)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from qip_share.application import Conflict, QipShare
from qip_share.codes import CPT, ICD10CM, LOINC, NDC, UnknownCodeSystem, normalise, system_uri
from qip_share.policy import BadPolicy, check_policy, default_policy, withheld_by
from qip_share.valuesets import BadValueSet, from_csv, from_fhir

NOW = datetime(2026, 1, 5, tzinfo=UTC)
HBA1C = {"resourceType": "ValueSet", "url": "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.198.12.1013",
         "version": "20240101", "name": "HbA1cLaboratoryTest", "status": "active",
         "expansion": {"timestamp": "2024-05-01T00:00:00Z", "contains": [
             {"system": "http://loinc.org", "code": "4548-4"},
             {"abstract": True, "display": "group", "contains": [{"system": "http://loinc.org", "code": "17856-6"}]},
             {"system": "http://example.org/unknown", "code": "x"}]}}


def test_systems_and_codes_are_normalised_the_way_feeds_and_value_sets_agree_on() -> None:
    assert system_uri("LOINC") == system_uri("2.16.840.1.113883.6.1") == system_uri("urn:oid:2.16.840.1.113883.6.1") == LOINC
    assert system_uri("ICD-10-CM") == ICD10CM and system_uri("cpt") == CPT
    with pytest.raises(UnknownCodeSystem):
        system_uri("ICD-9")
    assert normalise(ICD10CM, "e11.9") == "E119"
    assert [normalise(NDC, c) for c in ("0002-7510-01", "50090-347-0", "12345-6789-1", "00002751001")] == [
        "00002751001", "50090034700", "12345678901", "00002751001"]


def test_a_fhir_value_set_expansion_nested_and_abstract_entries() -> None:
    report = from_fhir(json.dumps(HBA1C).encode(), "")
    [parsed] = report.value_sets
    assert (parsed.name, parsed.version) == ("HbA1cLaboratoryTest", "20240101")
    assert parsed.codes == {(LOINC, "4548-4"), (LOINC, "17856-6")}
    assert report.errors == [{"at": "expansion.contains[2]", "reason": report.errors[0]["reason"]}]
    for bad in (b"{", b'{"resourceType": "Patient"}', json.dumps({**HBA1C, "expansion": None}).encode()):
        with pytest.raises(BadValueSet):
            from_fhir(bad, "v1")


def test_a_csv_of_several_value_sets_reports_bad_lines_and_keeps_the_rest() -> None:
    text = ("value_set_name,value_set_oid,code_system,code\n"
            "Diabetes,2.16.840.1.113883.3.464.1003.103.12.1001,ICD10CM,E11.9\n"
            "Diabetes,2.16.840.1.113883.3.464.1003.103.12.1001,ICD-9,250.00\n"
            "Well-Care,2.16.840.1.113883.3.464.1003.101.12.1001,CPT,99391\n"
            ",,CPT,99392\n")
    report = from_csv(text.encode(), "2025")
    assert {(v.name, v.version, len(v.codes)) for v in report.value_sets} == {("Diabetes", "2025", 1), ("Well-Care", "2025", 1)}
    assert [e["line"] for e in report.errors] == [3, 5]
    with pytest.raises(BadValueSet, match="missing CSV columns"):
        from_csv(b"name,code\nx,1\n", "2025")


def test_versions_are_added_never_rewritten_and_the_latest_is_current(tmp_path: Path) -> None:
    app = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    first = app.publish_value_sets(from_fhir(json.dumps(HBA1C).encode(), ""), "fhir", NOW)
    assert first[0]["status"] == "published" and first[0]["codes"] == 2
    assert app.publish_value_sets(from_fhir(json.dumps(HBA1C).encode(), ""), "fhir", NOW)[0]["status"] == "unchanged"
    changed = {**HBA1C, "expansion": {"timestamp": "2025-01-01T00:00:00Z",
                                      "contains": [{"system": "http://loinc.org", "code": "4548-4"}]}}
    with pytest.raises(Conflict, match="new version"):
        app.publish_value_sets(from_fhir(json.dumps(changed).encode(), ""), "fhir", NOW)
    app.publish_value_sets(from_fhir(json.dumps({**changed, "version": "20250101"}).encode(), ""), "fhir", NOW)
    catalog = app.catalog()
    assert catalog.current[HBA1C["url"]] == "20250101" and catalog.history[HBA1C["url"]] == ["20240101", "20250101"]
    assert app.codes_of(app.value_set(HBA1C["url"], "20240101")) == {(LOINC, "4548-4"), (LOINC, "17856-6")}
    assert app.codes_of(app.value_set(HBA1C["url"], "20250101")) == {(LOINC, "4548-4")}


def test_entities_and_community_partners(tmp_path: Path) -> None:
    app = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    partner = {"name": "Valley Clinic", "identifiers": {}, "address": "1 Main St, Merced CA", "endpoint": "sftp://valley"}
    dmph = app.register_entity("DMPH", "Hill District Hospital", {"npi": "1457392810"}, "2 Hill Rd, Hollister CA",
                               "sftp://hill", [partner])
    assert [r["role"] for r in dmph.recipients] == ["DMPH", "community_partner"]
    with pytest.raises(Conflict, match="already registered"):
        app.register_entity("DMPH", "Hill again", {"npi": "1457392810"}, "x street", "sftp://x", [])
    with pytest.raises(Conflict, match="only a DMPH"):
        app.register_entity("DPH", "County Medical Center", {"npi": "1999999999"}, "3 County Rd", "sftp://c", [partner])
    assert [e.name for e in app.entities()] == ["Hill District Hospital"]


def test_the_default_policy_withholds_by_code_label_feed_and_age_unless_a_legal_basis_is_recorded() -> None:
    policy = check_policy(default_policy())
    assert withheld_by(policy, [(ICD10CM, "F1120")], [], "claims", 40, []) == "sud_42cfr2"
    assert withheld_by(policy, [(ICD10CM, "F1120")], [], "claims", 40, ["part2_consent"]) is None
    assert withheld_by(policy, [(ICD10CM, "F172")], [], "claims", 40, []) is None  # nicotine is not a Part 2 record
    assert withheld_by(policy, [(LOINC, "56888-1")], [], "lab_results", 40, []) == "hiv_test_results"
    assert withheld_by(policy, [(LOINC, "4548-4")], ["HIV"], "lab_results", 40, []) == "hiv_test_results"
    assert withheld_by(policy, [(ICD10CM, "Z3009")], [], "claims", 15, []) == "minor_sensitive_services"
    assert withheld_by(policy, [(ICD10CM, "Z3009")], [], "claims", 30, []) is None
    assert withheld_by(policy, [(CPT, "99213")], [], "specialty_mental_health", 30, []) == "psychotherapy_lps"
    assert withheld_by(policy, [(CPT, "99213"), (LOINC, "4548-4")], [], "claims", 30, []) is None
    with pytest.raises(BadPolicy):
        check_policy({"version": "x", "categories": {"a": {"legal_reference": "r", "codes": [{"system": "ICD-9"}]}}})


def test_the_policy_is_versioned(tmp_path: Path) -> None:
    app = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    app.ensure_default_policy()
    app.ensure_default_policy()
    assert app.policy().current_version == "2025.1" and len(app.policy().versions) == 1
    newer = {**default_policy(), "version": "2026.1"}
    assert app.publish_policy(newer, "counsel review") is True
    assert app.publish_policy(newer, "again") is False
    with pytest.raises(Conflict):
        app.publish_policy({**default_policy(), "version": "2026.1", "categories": {}} | {"categories": {
            "x": {"legal_reference": "r"}}}, "rewrite")
    assert app.policy().current_version == "2026.1" and sorted(app.policy().versions) == ["2025.1", "2026.1"]
