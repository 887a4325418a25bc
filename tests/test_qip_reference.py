"""qip-share reference data over HTTP on real PostgreSQL: entities, value sets (FHIR and CSV) and the policy;
roles enforced; bad input is a problem JSON."""

from __future__ import annotations

import json

import pytest

from tests.harness import STAFF, Stack

pytestmark = pytest.mark.integration
AUDITOR = {"Authorization": "Bearer auditor-token"}
CSV = ("value_set_name,value_set_oid,code_system,code,value_set_version\n"
       "Childhood Immunization,2.16.840.1.113883.3.464.1003.196.12.1214,CVX,03,2025\n"
       "Childhood Immunization,2.16.840.1.113883.3.464.1003.196.12.1214,CVX,94,2025\n"
       "Childhood Immunization,2.16.840.1.113883.3.464.1003.196.12.1214,ICD-9,V04,2025\n")


async def test_reference_data_over_http(stack: Stack) -> None:
    await stack.start("qip-share")
    client = stack.clients["qip-share"]
    form = {"kind": "DMPH", "name": "Hill District Hospital", "identifiers": {"npi": "1457392813"},
            "address": "2 Hill Rd, Hollister CA", "endpoint": "sftp://hill.example/qip",
            "community_partners": [{"name": "Valley Clinic", "address": "1 Main St, Merced CA", "endpoint": "sftp://v"}]}
    assert (await client.post("/entities", json=form, headers=AUDITOR)).status_code == 403
    created = await client.post("/entities", json=form, headers=STAFF)
    assert created.status_code == 201 and len(created.json()["recipients"]) == 2
    again = await client.post("/entities", json=form, headers=STAFF)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    bad = await client.post("/entities", json={**form, "kind": "clinic"}, headers=STAFF)
    assert bad.status_code == 422 and "clinic" not in bad.text  # the problem names the field, not the value

    published = await client.post("/value-sets", content=CSV, headers={**STAFF, "content-type": "text/csv"})
    assert published.status_code == 200, published.text
    assert published.json()["value_sets"][0]["codes"] == 2 and published.json()["errors"][0]["line"] == 4
    no_version = await client.post("/value-sets", content=CSV.replace(",value_set_version", "").replace(",2025", ""),
                                   headers={**STAFF, "content-type": "text/csv"})
    assert no_version.status_code == 422
    not_fhir = await client.post("/value-sets", content=json.dumps({"resourceType": "Patient"}),
                                 headers={**STAFF, "content-type": "application/fhir+json"})
    assert not_fhir.status_code == 422
    catalog = (await client.get("/value-sets", headers=AUDITOR)).json()["value_sets"]
    assert [(v["name"], v["current_version"]) for v in catalog] == [("Childhood Immunization", "2025")]

    policy = (await client.get("/sensitivity-policy", headers=AUDITOR)).json()
    assert policy["current_version"] == "2026.1" and "sud_42cfr2" in policy["policy"]["categories"]
    assert (await client.post("/sensitivity-policy", json={"policy": {"version": ""}, "reason": "x y z"},
                              headers=STAFF)).status_code == 422
