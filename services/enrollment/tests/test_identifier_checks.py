"""Identifiers are checked where they come in (issue 12 §5): an NPI carries its check digit (Luhn over 80840 and its
first nine digits), so `0000000000` or a typo is refused wherever an NPI is input — interest form, early signature,
contracts-system messages, the DSA signatory list (a row error there); contact e-mails are e-mail addresses;
free identifiers are bounded. Refusals name the field and the kind of problem, never the value."""

from __future__ import annotations

from typing import Any

import pytest
from enrollment.application import Enrollment
from enrollment.handlers import SUBSCRIPTIONS
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.harness import deliver_event

from .conftest import FORM, STAFF

BAD_NPIS = ["0000000000", "1234567890", "1234567894", "123456789３"]


@pytest.mark.parametrize("npi", BAD_NPIS)
def test_an_interest_form_with_an_npi_failing_its_check_digit_is_422(api: TestClient, npi: str) -> None:
    for form in ({**FORM, "npi": npi}, {**FORM, "individual_npis": ["1234567893", npi]}):
        response = api.post("/participants", json=form, headers=STAFF)
        assert response.status_code == 422, response.text
        body = response.json()
        assert {tuple(e["loc"])[:2] for e in body["errors"]} <= {("body", "npi"), ("body", "individual_npis")}
        assert npi not in response.text


@pytest.mark.parametrize("email", ["nobody", "a@b", "a@@b.example", "a b@b.example", "a@b..example", ".a@b.example",
                                   "a@-b.example", "a@b.example.", "a@b.c0m", "x" * 65 + "@b.example",
                                   "a@" + "b" * 250 + ".example", "ａ@b.example"])
def test_a_contact_email_that_is_not_an_address_is_422(api: TestClient, email: str) -> None:
    response = api.post("/participants", json={**FORM, "contact_email": email}, headers=STAFF)
    assert response.status_code == 422, response.text
    assert [tuple(e["loc"]) for e in response.json()["errors"]] == [("body", "contact_email")]


def test_real_looking_addresses_and_npis_are_accepted(api: TestClient) -> None:
    form = {**FORM, "npi": "1003000126", "individual_npis": ["1234567893", "1992753883"],
            "contact_email": "billing.office+dsi@sunrise-care.example.org"}
    assert api.post("/participants", json=form, headers=STAFF).status_code == 201


@pytest.mark.parametrize("change", [{"sending_facilities": ["F" * 201]}, {"umbrella_group": "U" * 301},
                                    {"ehr_product": "E" * 301}, {"counties": ["C" * 101]}])
def test_free_identifiers_on_the_form_have_length_limits(api: TestClient, change: dict[str, Any]) -> None:
    assert api.post("/participants", json={**FORM, **change}, headers=STAFF).status_code == 422


def test_an_early_signature_naming_an_invalid_npi_is_422(api: TestClient) -> None:
    body = {"npi": "0000000000", "agreement": "DSA", "signed_at": "2024-02-01T09:00:00-08:00", "document_id": "d"}
    response = api.post("/agreements", json=body, headers=STAFF)
    assert response.status_code == 422 and [tuple(e["loc"]) for e in response.json()["errors"]] == [("body", "npi")]
    long_document = {**body, "npi": "1234567893", "document_id": "d" * 201}
    assert api.post("/agreements", json=long_document, headers=STAFF).status_code == 422


@pytest.mark.parametrize("subject,data", [
    ("dsi.in.agreement-signed", {"npi": "0000000000", "agreement": "DSA", "signed_at": "2024-02-01T09:00:00-08:00",
                           "document_id": "d"}),
    ("dsi.in.agreement-accepted", {"npi": "0000000000", "agreement": "DSA", "document_id": "d",
                             "accepted_at": "2024-02-02T09:00:00-08:00"}),
    ("dsi.in.agreement-signed", {"npi": "1234567893", "agreement": "DSA", "signed_at": "2024-02-01T09:00:00-08:00",
                           "document_id": "d" * 201}),
])
def test_a_contracts_system_message_with_an_invalid_npi_is_refused_for_good(
        enrollment_app: Enrollment, subject: str, data: dict[str, Any]) -> None:
    """A ValidationError is a ValueError: the consumer dead-letters it at once, naming the field, not the value."""
    with pytest.raises(ValidationError) as raised:
        deliver_event(enrollment_app, SUBSCRIPTIONS, subject, data, source="contracts")
    assert "0000000000" not in str([(e["loc"], e["type"], e["msg"]) for e in raised.value.errors()])


def test_a_dsa_list_row_with_an_invalid_npi_is_a_row_error(api: TestClient) -> None:
    listing = "legal_name,npi\nSunrise Skilled Nursing,0000000000\nOther Care,1234567893\n"
    report = api.post("/agreements/dsa-signatories", params={"list_date": "2024-04-01"}, content=listing,
                      headers={**STAFF, "content-type": "text/csv"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["errors"] == [{"line": 2, "reason": "npi: check digit does not match"}]
    assert (body["rows"], body["rejected"]) == (2, 1)
