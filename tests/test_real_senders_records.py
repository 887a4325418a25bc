"""Longitudinal records as real senders send them (issue 13), end to end on real NATS + PostgreSQL: a Synthea-style
FHIR transaction Bundle and a C-CDA CCD whose CIN is only in its Payers section both count for the attributed member,
and the submission's facts say how the member was found."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness import Stack
from tests.test_submissions import ready_pcp
from tests.x12_834 import cin

pytestmark = pytest.mark.integration
SYNTHEA, CCDA = cin(41), cin(42)
HIE = {"Authorization": "Bearer hie-token"}
CSV = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
       "other_health_coverage,dual_eligible\n"
       f"{SYNTHEA},DOE,JANE,1945-06-12,2025-01-01,,1H,N,N\n{CCDA},ROE,RITA,1950-01-01,2025-01-01,,1H,N,N\n")
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PATIENT_URL = "urn:uuid:0a56854c-d96f-e6b8-40fb-d55b3e438d27"


def synthea_transaction(member: str) -> dict[str, Any]:
    """Synthea's shape: a transaction of POSTs with urn:uuid fullUrls; providers named by conditional references."""
    patient = {"resourceType": "Patient", "id": PATIENT_URL[9:], "identifier": [
        {"system": "https://github.com/synthetichealth/synthea", "value": PATIENT_URL[9:]},
        {"type": {"coding": [{"system": V2_0203, "code": "SS"}]}, "system": "http://hl7.org/fhir/sid/us-ssn",
         "value": "999-46-5326"},
        {"type": {"coding": [{"system": V2_0203, "code": "MA"}]}, "value": member}]}
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                 "subject": {"reference": PATIENT_URL},
                 "participant": [{"individual": {
                     "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999998479"}}]}
    entries: list[tuple[str, dict[str, Any]]] = [(PATIENT_URL, patient), ("urn:uuid:e1", encounter)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for url, r in entries]}


SECTIONS = ("2.16.840.1.113883.10.20.22.2.6.1", "2.16.840.1.113883.10.20.22.2.1.1", "2.16.840.1.113883.10.20.22.2.5.1",
            "2.16.840.1.113883.10.20.22.2.3.1", "2.16.840.1.113883.10.20.22.2.17", "2.16.840.1.113883.10.20.22.2.4.1")


def ccd_with_payer_member_id(member: str) -> str:
    """HL7's C-CDA R2.1 CCD shape: recordTarget carries an SSN, the CIN is the Payers section's covered party id."""
    sections = "".join(f'<component><section><templateId root="{root}"/></section></component>' for root in SECTIONS)
    payers = ('<component><section><templateId root="2.16.840.1.113883.10.20.22.2.18"/>'
              '<code code="48768-6" codeSystem="2.16.840.1.113883.6.1"/><entry><act classCode="ACT" moodCode="EVN">'
              '<entryRelationship typeCode="COMP"><act classCode="ACT" moodCode="EVN"><participant typeCode="COV">'
              f'<participantRole classCode="PAT"><id root="2.16.840.1.113883.19" extension="{member}"/>'
              '</participantRole></participant></act></entryRelationship></act></entry></section></component>')
    return ('<ClinicalDocument xmlns="urn:hl7-org:v3"><templateId root="2.16.840.1.113883.10.20.22.1.2"/>'
            '<recordTarget><patientRole><id root="2.16.840.1.113883.4.1" extension="444222222"/></patientRole>'
            f'</recordTarget><component><structuredBody>{sections}{payers}</structuredBody></component>'
            '</ClinicalDocument>')


async def test_a_synthea_transaction_and_a_ccd_with_the_cin_in_its_payers_section_count_for_the_member(
        stack: Stack) -> None:
    pid = await ready_pcp(stack, CSV, (SYNTHEA, CCDA))
    received = {"participant_id": pid, "received_at": "2025-02-01T10:00:00-08:00"}
    fhir = await stack.clients["submissions"].post(
        "/longitudinal-records", content=json.dumps(synthea_transaction(SYNTHEA)), params=received,
        headers={**HIE, "content-type": "application/fhir+json"})
    cda = await stack.clients["submissions"].post(
        "/longitudinal-records", content=ccd_with_payer_member_id(CCDA), params=received,
        headers={**HIE, "content-type": "application/cda+xml"})
    by_fhir, by_cda = fhir.json(), cda.json()
    assert (by_fhir["verdict"], by_fhir["credit"]["member_id"], by_fhir["credit"]["attributed"]) == (
        "credited", SYNTHEA, True)
    assert (by_fhir["facts"]["member_found_by"], by_fhir["facts"]["bundle_type"]) == (
        "Patient.identifier.type MA", "transaction")
    assert (by_cda["verdict"], by_cda["credit"]["member_id"], by_cda["facts"]["member_found_by"]) == (
        "credited", CCDA, "Payers section (48768-6) covered party member id")
