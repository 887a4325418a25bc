"""Longitudinal records (DOMAIN.md A3, primary care): FHIR R4 Bundles and C-CDA CCDs."""

from __future__ import annotations

import json
from typing import Any

from submissions.longitudinal import CCD_SECTIONS, ccda_ccd, fhir_bundle

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
    assert fhir_bundle(bundle(CONDITION)).problems[0] == "Bundle must hold exactly one Patient"
    assert fhir_bundle(bundle(PATIENT, CONDITION, kind="transaction")).problems == ["Bundle.type must be document or collection"]
    assert fhir_bundle("{").problems == ["not JSON"]
    invalid = fhir_bundle(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": "nope"}))
    assert invalid.problems[0].startswith("not a valid FHIR R4 Bundle") and CIN not in invalid.problems[0]


def test_a_ccd_with_its_six_sections() -> None:
    facts = ccda_ccd(ccd())
    assert (facts.cin, facts.problems) == (CIN, [])


def test_a_ccd_missing_a_section_or_the_member() -> None:
    without_vitals = {k: v for k, v in CCD_SECTIONS.items() if k != "vital signs"}
    assert ccda_ccd(ccd(without_vitals)).problems == ["CCD section missing: vital signs"]
    assert ccda_ccd(ccd(cin="MRN-1")).problems == ["recordTarget/patientRole/id has no Medi-Cal CIN"]


def test_hostile_xml_is_refused() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3">&lol2;</ClinicalDocument>')
    assert ccda_ccd(bomb).problems == ["not well-formed (or unsafe) XML"]
    assert ccda_ccd("<not-closed").problems == ["not well-formed (or unsafe) XML"]
