"""QIP reference data (DOMAIN.md Part B): code normalisation, value sets from FHIR and CSV, versions never
rewritten, entities and their community partners, and the withholding policy — on the qip-share store (SQLite)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from qip_share.application import Conflict, QipShare
from qip_share.codes import CPT, ICD10CM, LOINC, NDC, UnknownCodeSystem, normalise, system_uri
from qip_share.policy import BadPolicy, check_policy, default_policy, shipped_policies, withheld_by
from qip_share.reference import SensitivityPolicy
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
    assert report.errors == [{"at": "expansion.contains[2]", "system": "http://example.org/unknown", "code": "x",
                              "reason": report.errors[0]["reason"]}]
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


def test_policy_2025_1_is_kept_as_shipped_so_deliveries_made_under_it_reproduce() -> None:
    """The first shipped version, read exactly as before (codes, whole feeds, ages; its deliveries rebuild under it)."""
    first, _ = shipped_policies()
    policy = check_policy(first)
    assert policy["version"] == "2025.1"
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
    with pytest.raises(BadPolicy, match="provider_npis"):
        check_policy({"version": "x", "categories": {"a": {"legal_reference": "r", "provider_npis": "123"}}})


def test_policy_2026_1_withholds_exactly_what_law_restricts_beyond_the_letter() -> None:
    """Issue 11: "Specialty mental health claims are shared by default. What stays withheld by default is exactly
    what law restricts beyond this letter, each category named in the versioned sensitivity policy with its citation
    and lifted only by a recorded legal basis"; "HL7 security labels withhold by themselves only where they name a
    legal category above (`42CFRPart2`, `HIV`); `PSY`, `ETH`, `STD`, `SEX`, `SDV` are recorded"."""
    policy = check_policy(default_policy())
    assert policy["version"] == "2026.1" and sorted(policy["categories"]) == [
        "hiv_test_results", "psychotherapy_notes", "sud_42cfr2"]
    assert all(c["legal_reference"] and c["legal_bases_that_permit"] for c in policy["categories"].values())
    assert "120975" in policy["categories"]["hiv_test_results"]["legal_reference"]
    assert "164.501" in policy["categories"]["psychotherapy_notes"]["legal_reference"]
    # 42 CFR Part 2: records from Part 2 programs (the label, or a listed program's NPI), not an SUD diagnosis as such
    assert withheld_by(policy, [(ICD10CM, "F1120")], [], "medical_claims", 40, []) is None
    assert withheld_by(policy, [(CPT, "99213")], ["42CFRPART2"], "medical_claims", 40, []) == "sud_42cfr2"
    assert withheld_by(policy, [(CPT, "99213")], ["42CFRPART2"], "medical_claims", 40, ["part2_consent"]) is None
    programs = check_policy({**default_policy(), "categories": {**default_policy()["categories"], "sud_42cfr2": {
        **default_policy()["categories"]["sud_42cfr2"], "provider_npis": ["1234567893"]}}})
    assert withheld_by(programs, [(CPT, "99213")], [], "medical_claims", 40, [], ["1234567893"]) == "sud_42cfr2"
    assert withheld_by(programs, [(CPT, "99213")], [], "medical_claims", 40, [], ["1992753880"]) is None
    # HIV test results (HSC 120975 ff.)
    assert withheld_by(policy, [(LOINC, "56888-1")], [], "lab_results", 40, []) == "hiv_test_results"
    assert withheld_by(policy, [(LOINC, "4548-4")], ["HIV"], "lab_results", 40, []) == "hiv_test_results"
    assert withheld_by(policy, [(LOINC, "56888-1")], [], "lab_results", 40, ["written_authorization"]) is None
    # psychotherapy notes, not claims: specialty mental health and a psychotherapy CPT on a claim are shared
    assert withheld_by(policy, [(CPT, "90837")], ["PSY"], "specialty_mental_health", 30, []) is None
    assert withheld_by(policy, [(CPT, "90834")], [], "specialty_mental_health", 30, [], [],
                       "psychotherapy_note") == "psychotherapy_notes"
    # minors' sensitive services are shared (Family Code 6920-6929 govern consent, not this disclosure)
    assert withheld_by(policy, [(ICD10CM, "Z3009")], ["SEX"], "medical_claims", 15, []) is None
    assert withheld_by(policy, [(ICD10CM, "A5600")], ["STD"], "medical_claims", None, []) is None
    for label in ("PSY", "ETH", "STD", "SEX", "SDV"):
        assert withheld_by(policy, [(CPT, "99213")], [label], "medical_claims", 30, []) is None
    assert policy["security_labels_recorded"] == ["ETH", "PSY", "SDV", "SEX", "STD"]


def test_the_policy_is_versioned_and_shipped_versions_are_published_at_start(tmp_path: Path) -> None:
    """"ship the new policy as a new version in the json and make sure the service publishes it at start …,
    without breaking stores that hold the old version"."""
    app = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    assert app.ensure_default_policy() == ["2026.1"]  # a fresh store: the newest shipped version
    assert app.ensure_default_policy() == []
    assert app.policy().current_version == "2026.1" and sorted(app.policy().versions) == ["2026.1"]
    newer = {**default_policy(), "version": "2027.1"}
    assert app.publish_policy(newer, "counsel review") is True
    assert app.publish_policy(newer, "again") is False
    with pytest.raises(Conflict):
        app.publish_policy({**default_policy(), "version": "2027.1", "categories": {}} | {"categories": {
            "x": {"legal_reference": "r"}}}, "rewrite")
    assert app.ensure_default_policy() == []  # staff's own current version stays current
    assert app.policy().current_version == "2027.1" and sorted(app.policy().versions) == ["2026.1", "2027.1"]

    # A store that holds 2025.1 as the previous release stored it gains 2026.1 at start and keeps 2025.1 unchanged.
    old_store = QipShare(f"sqlite:///{tmp_path / 'old.db'}")
    first = shipped_policies()[0]
    stored = check_policy(first)
    for name, category in stored["categories"].items():  # the previous release kept labels as written
        category["security_labels"] = first["categories"][name]["security_labels"]
    aggregate = SensitivityPolicy()
    aggregate.publish("2025.1", stored, "default policy (DOMAIN.md Part B)")
    old_store.save(aggregate)
    assert old_store.ensure_default_policy() == ["2026.1"] and old_store.ensure_default_policy() == []
    assert old_store.policy().current_version == "2026.1" and old_store.policy().versions["2025.1"] == stored
