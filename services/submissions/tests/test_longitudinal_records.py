"""Longitudinal records (DOMAIN.md A3, primary care): FHIR R4 Bundles and C-CDA CCDs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dsi_shared.members import CIN_SYSTEM
from submissions.longitudinal import CCD_SECTIONS, PAYER_MEMBER, RECORD_TARGET, ccda_ccd, fhir_bundle

CIN = "12345678A"


def bundle(*resources: dict[str, Any], kind: str = "collection") -> str:
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]})


PATIENT = {"resourceType": "Patient", "id": "p", "identifier": [
    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MA"}]}, "value": CIN}]}
CONDITION = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"},
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}}


def ccd(sections: dict[str, tuple[str, ...]] = CCD_SECTIONS, cin: str = CIN) -> str:
    body = "".join(f'<component><section><templateId root="{roots[0]}"/></section></component>'
                   for roots in sections.values())
    return (f'<ClinicalDocument xmlns="urn:hl7-org:v3"><templateId root="2.16.840.1.113883.10.20.22.1.2"/>'
            f'<recordTarget><patientRole><id root="2.16.840.1.113883.3.7" extension="{cin}"/></patientRole></recordTarget>'
            f"<component><structuredBody>{body}</structuredBody></component></ClinicalDocument>")


def test_a_bundle_with_the_patient_and_a_clinical_resource() -> None:
    facts = fhir_bundle(bundle(PATIENT, CONDITION))
    assert (facts.cin, facts.problems, facts.resource_types) == (CIN, [], ["Condition", "Patient"])


def test_bundles_that_do_not_qualify() -> None:
    assert fhir_bundle(bundle(PATIENT)).problems == [
        "Bundle holds no clinical resource (AllergyIntolerance, Condition, Encounter, Immunization, "
        "MedicationRequest, MedicationStatement, Observation, Procedure)"]
    assert fhir_bundle(bundle(CONDITION)).problems[0] == "Bundle holds no Patient"
    assert fhir_bundle(bundle(PATIENT, CONDITION, kind="history")).problems == [
        "Bundle.type must be document, collection, transaction, batch or searchset"]
    assert fhir_bundle("{").problems == ["not JSON"]
    invalid = fhir_bundle(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": "nope"}))
    assert invalid.problems[0].startswith("not a valid FHIR R4 Bundle") and CIN not in invalid.problems[0]


def test_a_ccd_with_its_six_sections() -> None:
    facts = ccda_ccd(ccd())
    assert (facts.cin, facts.problems) == (CIN, [])


def test_a_ccd_missing_a_section_or_the_member() -> None:
    without_vitals = {k: v for k, v in CCD_SECTIONS.items() if k != "vital signs"}
    assert ccda_ccd(ccd(without_vitals)).problems == ["CCD section missing: vital signs"]


def test_hostile_xml_is_refused() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3">&lol2;</ClinicalDocument>')
    assert ccda_ccd(bomb).problems == ["not well-formed (or unsafe) XML"]
    assert ccda_ccd("<not-closed").problems == ["not well-formed (or unsafe) XML"]


# -- real senders (issue 13): shapes trimmed from Synthea, Microsoft FHIR-Converter and HL7 C-CDA-Examples ----------
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SYNTHEA_PATIENT = "urn:uuid:0a56854c-d96f-e6b8-40fb-d55b3e438d27"


def typed(code: str, value: str, system: str = V2_0203) -> dict[str, Any]:
    return {"type": {"coding": [{"system": system, "code": code}]}, "value": value}


def synthea_transaction() -> dict[str, Any]:
    """Synthea's R4 export: a transaction, urn:uuid fullUrls, POSTs, conditional references to providers (which are
    not in the bundle), and a Patient whose identifiers are a Synthea UUID, MR, SS, DL and PPN (none CIN-shaped)."""
    patient = {"resourceType": "Patient", "id": SYNTHEA_PATIENT[9:], "identifier": [
        {"system": "https://github.com/synthetichealth/synthea", "value": SYNTHEA_PATIENT[9:]},
        {**typed("MR", SYNTHEA_PATIENT[9:]), "system": "http://hospital.smarthealthit.org"},
        {**typed("SS", "999-46-5326"), "system": "http://hl7.org/fhir/sid/us-ssn"},
        {**typed("DL", "S99961734"), "system": "urn:oid:2.16.840.1.113883.4.3.25"},
        {**typed("PPN", "X36707498X"), "system": "http://standardhealthrecord.org/2.16.840.1.113883.4.330.840"},
        typed("MA", CIN)]}
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                 "subject": {"reference": SYNTHEA_PATIENT, "display": "Ms. Anna632 Brekke496"},
                 "participant": [{"individual": {
                     "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999998479"}}],
                 "serviceProvider": {"reference": "Organization?identifier=https://github.com/synthetichealth/synthea|6024"}}
    condition = {**CONDITION, "id": "c1", "subject": {"reference": SYNTHEA_PATIENT},
                 "encounter": {"reference": "urn:uuid:e1"}}
    entries: list[tuple[str, dict[str, Any]]] = [(SYNTHEA_PATIENT, patient), ("urn:uuid:e1", encounter),
                                                 ("urn:uuid:c1", condition)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for url, r in entries]}


def test_a_synthea_transaction_bundle_is_a_longitudinal_record() -> None:
    facts = fhir_bundle(json.dumps(synthea_transaction()))
    assert (facts.cin, facts.problems, facts.member_found_by) == (CIN, [], "Patient.identifier.type MA")
    assert facts.recorded() == {"member_found_by": "Patient.identifier.type MA", "leniencies": [],
                                "bundle_type": "transaction"}


@pytest.mark.parametrize("kind", ["batch", "searchset", "transaction"])
def test_batch_searchset_and_transaction_bundles_are_records_as_much_as_documents(kind: str) -> None:
    assert (fhir_bundle(bundle(PATIENT, CONDITION, kind=kind)).problems, fhir_bundle(bundle(PATIENT, CONDITION)).problems) \
        == ([], [])


def test_a_converter_batch_with_relative_references_and_resources_missing_required_fields_is_read() -> None:
    """FHIR-Converter (C-CDA → FHIR): a batch, urn:uuid fullUrls, references `Patient/<id>`, PUT requests, the CIN
    under the sender's OID with no type, and an Observation without the `status` R4 requires."""
    pid = "03a91833-bc93-2b74-b2a0-7851c2c34ebc"
    patient = {"resourceType": "Patient", "id": pid, "identifier": [{"system": "urn:oid:1.3.6.1.4.1.16517.1", "value": CIN}]}
    observation = {"resourceType": "Observation", "id": "o1", "code": {"text": "A1c"}, "subject": {"reference": f"Patient/{pid}"}}
    raw = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in (patient, observation)]}
    facts = fhir_bundle(json.dumps(raw))
    assert (facts.cin, facts.problems, facts.member_found_by) == (CIN, [], "Patient.identifier without a type")
    assert facts.leniencies == ["entry 1 (Observation) not valid R4, read anyway: status: model_field_validation.missing"]


@pytest.mark.parametrize("reference", [
    {"reference": "urn:uuid:9b2c"}, {"reference": "Patient/p"}, {"reference": "https://ehr.example/fhir/Patient/p"},
    {"reference": "Patient/p/_history/3"}, {"reference": f"Patient?identifier={CIN_SYSTEM}|{CIN}"},
    {"identifier": {"system": CIN_SYSTEM, "value": CIN}}])
def test_references_resolve_inside_the_bundle_to_the_member_among_several_patients(reference: dict[str, Any]) -> None:
    """A searchset with `_include` may carry a second Patient (a parent): the member is the one the clinical
    resources point at, by fullUrl, relative, absolute or versioned URL, conditional or logical reference."""
    member = {"resourceType": "Patient", "id": "p", "identifier": [{"system": CIN_SYSTEM, "value": CIN}]}
    parent = {"resourceType": "Patient", "id": "q", "identifier": [typed("MA", "87654321B")]}
    raw = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "https://ehr.example/fhir/Patient/p" if "ehr" in str(reference) else "urn:uuid:9b2c",
         "resource": member},
        {"fullUrl": "urn:uuid:77aa", "resource": parent}, {"resource": {**CONDITION, "subject": reference}}]}
    facts = fhir_bundle(json.dumps(raw))
    assert (facts.cin, facts.problems, facts.member_found_by) == (CIN, [], "Patient.identifier.system")
    assert facts.leniencies == ["Bundle holds 2 Patients: the one its clinical resources point at is read"]


def test_clinical_resources_about_someone_not_in_the_bundle_do_not_make_a_record() -> None:
    facts = fhir_bundle(bundle(PATIENT, {**CONDITION, "subject": {"reference": "Patient/elsewhere"}}))
    assert facts.problems == ["no clinical resource in the Bundle is about its Patient"]
    assert facts.leniencies == ["1 clinical resources point at a subject not in the Bundle: not counted"]
    two = {"resourceType": "Patient", "id": "q", "identifier": [typed("MA", "87654321B")]}
    assert fhir_bundle(bundle(PATIENT, two, CONDITION, {**CONDITION, "subject": {"reference": "Patient/q"}})).problems == [
        "Bundle holds more than one Patient and its clinical resources do not point at one",
        ]


@pytest.mark.parametrize(("identifiers", "rule"), [
    ([typed("MR", "11111111B"), typed("MB", CIN)], "Patient.identifier.type MB"),
    ([typed("MC", CIN, system="http://hl7.org/fhir/v2/0203")], "Patient.identifier.type MC"),
    ([typed("MA", f"{CIN}51234")], "Patient.identifier.type MA (BIC id)"),
    ([{"value": "22222222C"}, {"system": CIN_SYSTEM, "value": f" {CIN.lower()} "}], "Patient.identifier.system"),
])
def test_the_member_is_found_by_any_cin_identifier_and_the_rule_is_recorded(identifiers: list[Any], rule: str) -> None:
    """The plan's CIN system first, then type MA/MB/MC (R4 or STU3 v2-0203; a BIC id cut to its CIN), then an
    untyped CIN-shaped value; an MRN that happens to look like a CIN is never the member."""
    facts = fhir_bundle(bundle({**PATIENT, "identifier": identifiers}, CONDITION))
    assert (facts.cin, facts.member_found_by, facts.problems) == (CIN, rule, [])


def test_a_resource_type_r4_does_not_know_is_ignored_not_a_crash() -> None:
    facts = fhir_bundle(bundle(PATIENT, {"resourceType": "Transport", "id": "t"}, CONDITION))
    assert (facts.cin, facts.problems, facts.resource_types) == (CIN, [], ["Condition", "Patient"])
    assert facts.leniencies == ["entry 1: resourceType not in FHIR R4, ignored"]


PAYERS = ('<component><section><templateId root="2.16.840.1.113883.10.20.22.2.18" extension="2015-08-01"/>'
          '<code code="48768-6" codeSystem="2.16.840.1.113883.6.1"/><entry><act classCode="ACT" moodCode="EVN">'
          '<entryRelationship typeCode="COMP"><act classCode="ACT" moodCode="EVN">'
          '<participant typeCode="HLD"><participantRole><id root="2.16.840.1.113883.19" extension="87654321B"/>'
          '</participantRole></participant>'
          '<participant typeCode="COV"><participantRole classCode="PAT">'
          '<id root="14d4a520-7aae-11db-9fe1-0800200c9a66" extension="{cin}"/></participantRole></participant>'
          '</act></entryRelationship></act></entry></section></component>')


def test_a_ccd_whose_cin_is_only_the_payers_section_member_id() -> None:
    """HL7's C-CDA R2.1 CCD: recordTarget carries the SSN; the plan's member id is the covered party's id in the
    Payers section (not the policy holder's)."""
    text = ccd(cin="444222222").replace("</structuredBody>", PAYERS.replace("{cin}", CIN) + "</structuredBody>")
    facts = ccda_ccd(text)
    assert (facts.cin, facts.member_found_by, facts.problems) == (CIN, PAYER_MEMBER, [])
    both = ccd().replace("</structuredBody>", PAYERS.replace("{cin}", "33333333D") + "</structuredBody>")
    assert (ccda_ccd(both).cin, ccda_ccd(both).member_found_by) == (CIN, RECORD_TARGET)


def test_a_ccd_without_the_member_or_sections_names_each_missing_part() -> None:
    only_three = {k: v for k, v in CCD_SECTIONS.items() if k in ("allergies", "medications", "problems")}
    text = ccd(only_three, cin="MRN-1").replace("</structuredBody>", PAYERS.replace("{cin}", "MEMBER-7") + "</structuredBody>")
    assert ccda_ccd(text).problems == [
        "no Medi-Cal CIN in recordTarget/patientRole/id or the Payers section (48768-6) covered party member id",
        "CCD section missing: results", "CCD section missing: social history", "CCD section missing: vital signs"]
