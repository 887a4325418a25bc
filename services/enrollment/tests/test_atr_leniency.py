"""Da Vinci ATR lists as real senders shape them (HL7/davinci-atr `input/examples`: group-fullexample.xml,
davinci-patient-list-example.xml, patient-1.json, practitioner-1.json, practitionerrole-1.json, organization-2.json,
here in JSON with synthetic CINs): references resolve through the Bundle, `contained` or the export's NDJSON, each
member's attributedProvider is used and the Group's NPI only when a member names none, and the report says which."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from enrollment.members import PCP, QIP
from enrollment.rosters import AttributionRow, RowError, UnreadableFile, attribution_atr
from fastapi.testclient import TestClient

from .conftest import STAFF

ATR = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/"
NPI = "http://hl7.org/fhir/sid/us-npi"
GROUP_NPI, PRACTITIONER_NPI, ORG_NPI = "9941339108", "9941339100", "1234567893"
CINS = ("90000001A", "90000002B", "90000003C")


def ma(cin: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MA"}]},
            "system": "urn:example:medi-cal", "value": cin}


def patient(pid: str, *identifiers: dict[str, Any]) -> dict[str, Any]:
    mrn = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
           "system": "http://example.org", "value": "smart-1213208"}
    return {"resourceType": "Patient", "id": pid, "identifier": [mrn, *identifiers]}


def member(entity: str, provider: str | None = None, start: str = "2025-01-01") -> dict[str, Any]:
    extensions = [{"url": ATR + "ext-changeType", "valueCode": "add"},
                  {"url": ATR + "ext-coverageReference", "valueReference": {"reference": "Coverage/1"}}]
    if provider:
        extensions.append({"url": ATR + "ext-attributedProvider", "valueReference": {"reference": provider}})
    return {"extension": extensions, "entity": {"reference": entity}, "period": {"start": start}, "inactive": False}


def group(*members: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Group", "id": "fullexample", "type": "person", "actual": True, "active": True,
            "identifier": [{"use": "official", "type": {"coding": [{"code": "NPI"}]}, "system": NPI, "value": GROUP_NPI},
                           {"system": "urn:oid:2.16.840.1.113883.4.4", "value": "789456231"}],
            "member": list(members), **extra}


PRACTITIONER = {"resourceType": "Practitioner", "id": "1", "identifier": [{"system": NPI, "value": PRACTITIONER_NPI}]}
ROLE = {"resourceType": "PractitionerRole", "id": "1", "identifier": [{"system": "http://www.acme.org/practitioners",
        "value": "23"}], "practitioner": {"reference": "Practitioner/1"}, "organization": {"reference": "Organization/1"}}
ORG_WITHOUT_NPI = {"resourceType": "Organization", "id": "2", "identifier": [{"system": "http://example.org", "value": "666666"}]}
ORG_WITH_NPI = {"resourceType": "Organization", "id": "3", "identifier": [{"system": NPI, "value": ORG_NPI}]}


def bundle(*resources: dict[str, Any], urls: dict[int, str] | None = None) -> str:
    entries = [{"fullUrl": (urls or {}).get(i, f"http://payer.example/fhir/{r['resourceType']}/{r['id']}"), "resource": r}
               for i, r in enumerate(resources)]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def fullexample() -> str:
    """group-fullexample: Organization/2 (no NPI), Practitioner/1, PractitionerRole/1, then one naming none."""
    return bundle(group(member("Patient/1", "Organization/2"), member("Patient/2", "Practitioner/1"),
                        member("Patient/3", "PractitionerRole/1"), member("Patient/4")),
                  patient("1", ma(CINS[0])), patient("2", ma(CINS[1])), patient("3", ma(CINS[2])),
                  patient("4", ma("90000004D")), PRACTITIONER, ROLE, ORG_WITHOUT_NPI)


def test_each_member_keeps_its_attributed_provider_and_an_unresolvable_one_is_an_error_not_the_group_npi() -> None:
    rows = list(attribution_atr(fullexample(), PCP))
    assert rows == [
        RowError(1, f"attributedProvider: the Organization has no NPI identifier ({NPI})"),
        AttributionRow(2, CINS[1], PCP, PRACTITIONER_NPI, date(2025, 1, 1), None),
        AttributionRow(3, CINS[2], PCP, PRACTITIONER_NPI, date(2025, 1, 1), None),  # the role's practitioner
        AttributionRow(4, "90000004D", PCP, GROUP_NPI, date(2025, 1, 1), None)]
    assert [getattr(r, "provider_from", None) for r in rows] == [None, "attributed_provider", "attributed_provider",
                                                                 "group_npi"]


def test_an_attributed_provider_not_sent_in_the_file_is_reported_never_replaced_by_the_group_npi() -> None:
    alone = group({"entity": {"reference": f"Patient/{CINS[0]}"}, "period": {"start": "2025-01-01"},
                   "extension": [{"url": ATR + "ext-attributedProvider", "valueReference": {"reference": "Practitioner/9"}}]})
    [row] = attribution_atr(json.dumps(alone), PCP)
    assert isinstance(row, RowError) and row.reason.startswith("attributedProvider: reference not found in the file")


def test_member_entities_resolve_by_urn_uuid_absolute_url_and_contained_patient() -> None:
    uuid = "urn:uuid:5c2a1f3e-8d1b-4f4e-9a55-1f2b3c4d5e6f"
    text = bundle(group(member(uuid, "Organization/3"), member("http://payer.example/fhir/Patient/2/_history/1"),
                        member("#p3", "#dr"),
                        contained=[patient("p3", {"value": CINS[2]}),
                                   {**PRACTITIONER, "id": "dr"}]),
                  patient("x", ma(CINS[0])), patient("2", ma(CINS[1])), ORG_WITH_NPI, urls={1: uuid})
    rows = list(attribution_atr(text, PCP))
    assert [(r.cin, r.assignee) for r in rows if isinstance(r, AttributionRow)] == [
        (CINS[0], ORG_NPI), (CINS[1], GROUP_NPI), (CINS[2], PRACTITIONER_NPI)]


def test_a_patient_without_a_cin_identifier_is_reported_and_its_mrn_is_never_taken() -> None:
    text = bundle(group(member("Patient/1"), member("#gone"), member("Practitioner/1")),
                  {**patient("1"), "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": CINS[0]}]},
                  PRACTITIONER)
    assert list(attribution_atr(text, PCP)) == [
        RowError(1, "member.entity: the Patient has no Medi-Cal CIN identifier (type MA, MB or MC)"),
        RowError(2, "member.entity: reference not found in the file"),
        RowError(3, "member.entity: does not reference a Patient")]


def test_a_bulk_export_ndjson_of_group_patients_and_practitioners_is_read() -> None:
    lines = [group(member("Patient/1", "Practitioner/1"), member("Patient/2")), patient("1", ma(CINS[0])),
             patient("2", ma(CINS[1])), PRACTITIONER]
    rows = list(attribution_atr("\n".join(json.dumps(line) for line in lines) + "\n", PCP))
    assert [(r.cin, r.assignee) for r in rows if isinstance(r, AttributionRow)] == [
        (CINS[0], PRACTITIONER_NPI), (CINS[1], GROUP_NPI)]
    with pytest.raises(UnreadableFile, match="2 Groups"):
        list(attribution_atr(json.dumps(lines[0]) + "\n" + json.dumps(lines[0]), PCP))


def test_a_patient_list_whose_npi_is_only_in_the_intended_recipient_extension_is_read() -> None:
    """davinci-patient-list-example: no Group.identifier, the NPI in atr-intended-recipient-identifier-extension."""
    patient_list = {"resourceType": "Group", "id": "davincipatientlistexample", "type": "person", "actual": True,
                    "extension": [{"url": ATR + "atr-intended-recipient-identifier-extension",
                                   "valueIdentifier": {"system": NPI, "value": GROUP_NPI}}],
                    "member": [member("Patient/1", start="2014-10-08"), member("Patient/2", start="2015-04-02")]}
    text = bundle(patient_list, patient("1", ma(CINS[0])), patient("2", ma(CINS[1])))
    assert list(attribution_atr(text, PCP)) == [AttributionRow(1, CINS[0], PCP, GROUP_NPI, date(2014, 10, 8), None),
                                                AttributionRow(2, CINS[1], PCP, GROUP_NPI, date(2015, 4, 2), None)]
    assert [r.assignee for r in attribution_atr(text, QIP) if isinstance(r, AttributionRow)] == [GROUP_NPI] * 2


def test_the_import_report_counts_and_lists_which_members_fell_back_to_the_group_npi(api: TestClient) -> None:
    response = api.post("/attributions/import", content=fullexample(),
                        headers={**STAFF, "content-type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["format"], report["accepted"], report["rejected"]) == ("atr", 3, 1)
    assert report["provider_sources"] == {"attributed_provider": 2, "group_npi": 1, "group_npi_lines": [4],
                                          "group_npi_lines_not_shown": 0}
    assert report["errors"] == [{"line": 1, "reason": f"attributedProvider: the Organization has no NPI identifier ({NPI})"}]
    assert CINS[1] not in response.text  # the report names lines, never members
    seen = api.get(f"/members/{CINS[1]}", params={"on": "2025-02-01"}, headers=STAFF).json()
    assert seen["attributed_participant"] == PRACTITIONER_NPI
