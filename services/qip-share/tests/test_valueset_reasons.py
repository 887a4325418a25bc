"""POST /value-sets names each code it could not use and why (unknown code system, missing code), in the 422
and in the 200's per-line errors; value-set codes are reference data, not PHI. Long lists are capped and counted."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dsi_shared.http import Auth, install_problem_handlers
from fastapi import FastAPI
from fastapi.testclient import TestClient
from qip_share.api import routes
from qip_share.valuesets import MAX_NAMED_CODES, UNKNOWN_SYSTEM, BadValueSet, from_csv, from_fhir

STAFF = {"Authorization": "Bearer staff"}
FHIR = {**STAFF, "content-type": "application/fhir+json"}
CSV = {**STAFF, "content-type": "text/csv"}
HEADER = "value_set_name,value_set_oid,code_system,code,value_set_version\n"


def value_set(*contains: dict[str, Any]) -> bytes:
    return json.dumps({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/bp", "version": "1",
                       "name": "BloodPressure", "status": "active",
                       "expansion": {"timestamp": "2025-01-01T00:00:00Z", "contains": list(contains)}}).encode()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    from qip_share.application import QipShare

    monkeypatch.setenv("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    app = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    http = FastAPI()
    install_problem_handlers(http)
    http.include_router(routes(app, Auth({"staff": "program-staff"})))
    with TestClient(http, raise_server_exceptions=False) as test_client:
        yield test_client
    app.close()


def test_a_value_set_without_usable_codes_is_422_naming_each_code_and_why(client: TestClient) -> None:
    body = value_set({"system": "http://www.ama-assn.org/go/cpt-typo", "code": "99213"},
                     {"system": "http://loinc.org"}, {"code": "8480-6"})
    response = client.post("/value-sets", content=body, headers=FHIR)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["detail"].startswith("the ValueSet has no usable codes: none of its 3 entries could be used")
    assert problem["errors"] == [
        {"at": "expansion.contains[0]", "system": "http://www.ama-assn.org/go/cpt-typo", "code": "99213",
         "reason": UNKNOWN_SYSTEM},
        {"at": "expansion.contains[1]", "system": "http://loinc.org", "code": None, "reason": "missing code"},
        {"at": "expansion.contains[2]", "system": None, "code": "8480-6", "reason": "missing code system"}]
    assert problem["errors_not_shown"] == 0


def test_a_csv_whose_every_row_is_unusable_is_422_not_an_empty_200(client: TestClient) -> None:
    text = HEADER + "Diabetes,2.16.840.1.113883.3.464.1003.103.12.1001,ICD-9,250.00,2025\n" \
                    "Diabetes,2.16.840.1.113883.3.464.1003.103.12.1001,ICD10CM,,2025\n"
    response = client.post("/value-sets", content=text, headers=CSV)
    assert response.status_code == 422, response.text
    assert [(e["line"], e["system"], e["code"], e["reason"]) for e in response.json()["errors"]] == [
        (2, "ICD-9", "250.00", UNKNOWN_SYSTEM), (3, "ICD10CM", None, "missing code")]
    assert client.get("/value-sets", headers=STAFF).json()["value_sets"] == []


def test_the_named_codes_are_capped_and_the_rest_counted(client: TestClient) -> None:
    body = value_set(*({"system": "urn:oid:1.2.3", "code": f"C{n}"} for n in range(MAX_NAMED_CODES + 25)))
    problem = client.post("/value-sets", content=body, headers=FHIR).json()
    assert len(problem["errors"]) == MAX_NAMED_CODES and problem["errors_not_shown"] == 25
    assert problem["errors"][-1]["code"] == f"C{MAX_NAMED_CODES - 1}"


def test_a_published_value_set_names_the_codes_it_left_out(client: TestClient) -> None:
    body = value_set({"system": "http://loinc.org", "code": "8480-6"}, {"system": "ICD-9", "code": "401.9"})
    response = client.post("/value-sets", content=body, headers=FHIR)
    assert response.status_code == 200, response.text
    assert response.json()["errors"] == [{"at": "expansion.contains[1]", "system": "ICD-9", "code": "401.9",
                                          "reason": UNKNOWN_SYSTEM}]


def test_an_empty_expansion_says_it_lists_no_codes() -> None:
    with pytest.raises(BadValueSet, match="it lists no codes") as raised:
        from_fhir(value_set(), "")
    assert raised.value.errors == []
    with pytest.raises(BadValueSet, match="it lists no codes"):
        from_csv(HEADER.encode(), "2025")
