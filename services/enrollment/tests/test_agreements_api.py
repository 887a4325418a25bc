"""Agreements over HTTP and from the contracts system (DOMAIN.md A1, A2): acceptance, due dates, the signing
deadline, applying again, and the DSA signatory list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from dsi_shared.cli import app as cli
from dsi_shared.errors import PermanentError
from enrollment.application import Enrollment
from enrollment.handlers import SUBSCRIPTIONS
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.harness import deliver_event

from .conftest import FORM, STAFF


def register(api: TestClient, **changes: Any) -> dict[str, Any]:
    response = api.post("/participants", json={**FORM, **changes}, headers=STAFF)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def sign(api: TestClient, pid: str, agreement: str, signed_at: str = "2024-03-20T10:00:00-07:00",
         document_id: str | None = None) -> httpx.Response:
    return api.post(f"/participants/{pid}/agreements", headers=STAFF,
                    json={"agreement": agreement, "signed_at": signed_at, "document_id": document_id or f"doc-{agreement}"})


def show(api: TestClient, pid: str) -> dict[str, Any]:
    return api.get(f"/participants/{pid}", headers=STAFF).json()  # type: ignore[no-any-return]


def events(api: TestClient, pid: str) -> list[str]:
    return [h["event"] for h in show(api, pid)["history"]]



# -- 1. signed and accepted ------------------------------------------------------------------------------------
def test_one_staff_action_accepts_every_signed_document(api: TestClient) -> None:
    """"Once all these documents have been signed and accepted, you will have completed Milestone 1." Signed is
    shown as awaiting review; `POST .../agreements/acceptance` records one AgreementReviewed (accepted) per signed,
    not yet reviewed document."""
    pid = register(api)["id"]
    for kind in ("LOA", "DSA", "HIE"):
        assert sign(api, pid, kind).status_code == 201
    before = show(api, pid)
    assert {k: (a["signed"], a["status"]) for k, a in before["agreements"].items()} == {
        k: (True, "awaiting_review") for k in ("LOA", "DSA", "HIE")}
    assert before["agreements_accepted"] is False
    done = api.post(f"/participants/{pid}/agreements/acceptance", json={"reason": "checked signatures"}, headers=STAFF)
    assert done.status_code == 200, done.text
    body = done.json()
    assert [a["agreement"] for a in body["accepted"]] == ["LOA", "DSA", "HIE"]
    assert {k: a["status"] for k, a in body["agreements"].items()} == {k: "accepted" for k in ("LOA", "DSA", "HIE")}
    assert body["agreements"]["LOA"]["review"] == {"decision": "accepted", "reason": "checked signatures",
                                                   "decided_by": "staff"}
    assert body["agreements_accepted"] is True
    assert events(api, pid).count("AgreementReviewed") == 3
    again = api.post(f"/participants/{pid}/agreements/acceptance", headers=STAFF)  # no body: the default reason
    assert again.json()["accepted"] == [] and events(api, pid).count("AgreementReviewed") == 3
    bad = api.post(f"/participants/{pid}/agreements/acceptance", json={"reason": 3, "extra": 1}, headers=STAFF)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert api.post("/participants/00000000-0000-0000-0000-000000000000/agreements/acceptance",
                    headers=STAFF).status_code == 404


def test_the_contracts_system_accepts_on_nats_even_before_the_signature(enrollment_app: Enrollment,
                                                                       api: TestClient) -> None:
    """"Accepted means accepted by staff review or by the counterparty (an acceptance event, ...)":
    `dsi.in.agreement-accepted` becomes the same AgreementReviewed (reason "accepted by the contracts system"); one
    naming an NPI before the interest form, or a signature not yet recorded, is held and applied when it arrives."""
    early = {"npi": "1555555550", "agreement": "DSA", "document_id": "dsa-1", "accepted_at": "2024-02-02T09:00:00-08:00"}
    enrollment_app.save(*deliver_event(enrollment_app, SUBSCRIPTIONS, "dsi.in.agreement-accepted", early, source="contracts"))
    held = enrollment_app._identity("npi:1555555550")
    assert len(held.held_acceptances) == 1
    api.post("/agreements", headers=STAFF, json={"npi": "1555555550", "agreement": "DSA", "document_id": "dsa-1",
                                                "signed_at": "2024-02-01T09:00:00-08:00"})
    pid = register(api, npi="1555555550")["id"]
    shown = show(api, pid)
    assert shown["agreements"]["DSA"]["status"] == "accepted"
    assert shown["agreements"]["DSA"]["review"]["reason"] == "accepted by the contracts system"
    assert shown["agreements"]["DSA"]["review"]["decided_by"] == "contracts-system"
    # by participant id, before the HIE signature is known: held on the participant, then applied
    message = {"participant_id": pid, "agreement": "HIE", "document_id": "hie-1", "accepted_at": "2024-03-05T10:00:00Z"}
    enrollment_app.save(*deliver_event(enrollment_app, SUBSCRIPTIONS, "dsi.in.agreement-accepted", message, source="contracts"))
    assert show(api, pid)["agreements"]["HIE"] is None
    sign(api, pid, "HIE", document_id="hie-1")
    assert show(api, pid)["agreements"]["HIE"]["status"] == "accepted"
    again = deliver_event(enrollment_app, SUBSCRIPTIONS, "dsi.in.agreement-accepted", message, source="contracts")
    enrollment_app.save(*again)  # no change
    assert events(api, pid).count("AgreementReviewed") == 2


@pytest.mark.parametrize("broken", [
    {"agreement": "DSA", "document_id": "d", "accepted_at": "2024-02-02T09:00:00Z"},  # names no provider
    {"participant_id": "x", "agreement": "DSA", "document_id": "d", "accepted_at": "2024-02-02T09:00:00"},  # no offset
    {"npi": "1555555550", "agreement": "NDA", "document_id": "d", "accepted_at": "2024-02-02T09:00:00Z"},
])
def test_an_acceptance_that_can_never_apply_is_a_permanent_error(enrollment_app: Enrollment,
                                                                 broken: dict[str, Any]) -> None:
    """A message no retry can fix is dead-lettered with a reason (PermanentError), never half applied."""
    with pytest.raises(PermanentError):
        deliver_event(enrollment_app, SUBSCRIPTIONS, "dsi.in.agreement-accepted", broken, source="contracts")


# -- 2. due date and the signing deadline ----------------------------------------------------------------------
def test_staff_set_the_participant_due_date_when_the_loa_is_executed(api: TestClient) -> None:
    """"submitted by the provider's respective due date (to be determined during agreement execution)": by
    default the type's Milestone 1 date; staff set the participant's own (AgreementDueDateSet)."""
    pid = register(api)["id"]
    assert show(api, pid)["agreement_due_date"] == {"due_on": "2024-09-30", "set_by_staff": False, "reason": None}
    body = {"due_on": "2024-11-30", "reason": "LOA executed 2024-05-01 with a due date"}
    set_ = api.post(f"/participants/{pid}/agreement-due-date", json=body, headers=STAFF)
    assert set_.status_code == 200 and set_.json()["changed"] is True
    assert set_.json()["agreement_due_date"] == {"due_on": "2024-11-30", "set_by_staff": True, "reason": body["reason"]}
    assert api.post(f"/participants/{pid}/agreement-due-date", json=body, headers=STAFF).json()["changed"] is False
    assert events(api, pid).count("AgreementDueDateSet") == 1
    for bad in ({"due_on": "2024-02-30", "reason": "x"}, {"due_on": "2024-11-30"}, {"due_on": "2024-11-30", "reason": ""}):
        answer = api.post(f"/participants/{pid}/agreement-due-date", json=bad, headers=STAFF)
        assert answer.status_code == 422 and "2024" not in answer.text
    auditor = api.post(f"/participants/{pid}/agreement-due-date", json=body, headers={"Authorization": "Bearer auditor-token"})
    assert auditor.status_code == 403


def test_a_plan_agreement_signed_after_the_signing_deadline_is_flagged_not_refused(api: TestClient) -> None:
    """"Deadline to Sign Alliance Agreements": `sign_plan_agreements_by` (rules in force) is shown; a plan
    agreement signed after it is flagged for staff, never refused; a staff extension (SigningExtensionGranted)
    moves the deadline. The DSA "may be signed at any time" and is never flagged."""
    pid = register(api)["id"]
    assert sign(api, pid, "LOA", "2024-04-02T10:00:00-07:00").status_code == 201  # the day after 2024-04-01
    assert sign(api, pid, "DSA", "2024-06-02T10:00:00-07:00").status_code == 201
    assert sign(api, pid, "HIE", "2024-04-01T23:30:00-07:00").status_code == 201  # still 2024-04-01 in the plan's zone
    shown = show(api, pid)
    assert shown["signing"]["sign_plan_agreements_by"] == "2024-04-01"
    assert {k: a["late"] for k, a in shown["agreements"].items()} == {"LOA": True, "DSA": False, "HIE": False}
    assert shown["signing"]["late_signatures"] == [{"agreement": "LOA", "document_id": "doc-LOA", "signed_on": "2024-04-02"}]
    extended = api.post(f"/participants/{pid}/signing-extension", json={"until": "2024-04-15", "reason": "board meeting"},
                        headers=STAFF).json()
    assert (extended["changed"], extended["signing"]["deadline"], extended["signing"]["late_signatures"]) == (
        True, "2024-04-15", [])
    assert extended["signing"]["extension"] == {"until": "2024-04-15", "reason": "board meeting"}
    assert events(api, pid).count("SigningExtensionGranted") == 1
    assert api.post(f"/participants/{pid}/signing-extension", json={"until": "soon"}, headers=STAFF).status_code == 422


# -- 3. applying again -----------------------------------------------------------------------------------------
def test_an_ineligible_provider_applies_again_and_an_organization_joins_a_later_round(api: TestClient) -> None:
    """"A provider whose form was ineligible may apply again (a new application linked to the earlier one); a
    group that uses one EHR for several provider types can join a later round for another type." The same NPI and
    type while the earlier participant is eligible is still refused (409)."""
    first = register(api, ehr_product=None)
    assert first["eligible"] is False
    second = register(api)
    assert (second["eligible"], second["previous_application"], second["organization_id"]) == (True, first["id"], None)
    assert show(api, first["id"])["later_applications"] == [second["id"]]
    assert second["cap_scope"] in {"organization", "participation"}
    duplicate = api.post("/participants", json=FORM, headers=STAFF)
    assert duplicate.status_code == 409 and duplicate.json()["participant_id"] == second["id"]
    later_round = register(api, provider_type="primary_care", submitted_on="2024-08-01")
    assert (later_round["organization_id"], later_round["previous_application"]) == (second["id"], first["id"])
    assert show(api, second["id"])["organization_participations"] == [second["id"], later_round["id"]]
    again = api.post("/participants", json={**FORM, "provider_type": "primary_care", "submitted_on": "2024-08-02"},
                     headers=STAFF)
    assert again.status_code == 409 and again.json()["participant_id"] == later_round["id"]
    # a signature naming only the NPI goes to the latest eligible application
    accepted = api.post("/agreements", headers=STAFF, json={"npi": FORM["npi"], "agreement": "DSA", "document_id": "d",
                                                           "signed_at": "2024-08-03T10:00:00-07:00"})
    assert accepted.json()["participant_id"] == later_round["id"]


# -- 4. the DSA signatory list ---------------------------------------------------------------------------------
SIGNATORIES = "\n".join([
    "Legal_Name,NPI,TIN,Signed_On,Region",
    "SUNRISE SKILLED NURSING INC,1234567893,,2024-03-15,Central",  # by NPI
    "Valley Clinic LLC,,94-7654321,3/20/2024,Central",  # by TIN (the participant has an NPI too)
    "The Harbor Health Center,,,2024-03-25,Central",  # by name only
    "Nobody We Know,1999999992,,2024-03-25,North",  # unmatched
    "Broken Row,12345,,2024-03-25,North",  # bad NPI
]) + "\n"


def test_the_dsa_signatory_list_records_and_accepts_the_dsa_of_participants_on_it(api: TestClient) -> None:
    """"Accepted means accepted by staff review or by the counterparty (an acceptance event, the state's DSA
    signatory list)": matched by NPI/TIN, the DSA is signed and accepted with the list as evidence; by legal name
    only, signed and left for staff to confirm; unmatched rows reported; the same list again changes nothing."""
    sunrise = register(api)["id"]
    valley = register(api, legal_name="Valley Clinic", npi="1111111112", tin="947654321")["id"]
    harbor = register(api, legal_name="Harbor Health Center, Inc.", npi="1222222220", tin=None)["id"]
    headers = {**STAFF, "content-type": "text/csv"}
    report = api.post("/agreements/dsa-signatories", params={"list_date": "2024-04-01"}, content=SIGNATORIES,
                      headers=headers).json()
    assert {k: report[k] for k in ("rows", "matched", "weak_matches", "unmatched", "recorded", "already", "rejected")} == {
        "rows": 5, "matched": 2, "weak_matches": 1, "unmatched": 1, "recorded": 3, "already": 0, "rejected": 1}
    assert report["errors"] == [{"line": 6, "reason": "npi: not 10 digits"}]
    assert report["ignored_columns"] == ["region"]
    assert [(r["line"], r["matched_by"], r["participant_id"], r["outcome"]) for r in report["results"]] == [
        (2, "npi", sunrise, "recorded"), (3, "tin", valley, "recorded"), (4, "name", harbor, "recorded_for_review"),
        (5, None, None, "unmatched")]
    dsa = show(api, sunrise)["agreements"]["DSA"]
    assert (dsa["status"], dsa["signed_at"], dsa["channel"]) == ("accepted", "2024-03-15T00:00:00-07:00", "dsa-signatory-list")
    assert dsa["review"] == {"decision": "accepted", "reason": "DSA signatory list 2024-04-01",
                             "decided_by": "dsa-signatory-list"}
    assert show(api, valley)["agreements"]["DSA"]["signed_at"] == "2024-03-20T00:00:00-07:00"
    assert show(api, harbor)["agreements"]["DSA"]["status"] == "awaiting_review"
    history = {pid: events(api, pid) for pid in (sunrise, valley, harbor)}
    again = api.post("/agreements/dsa-signatories", params={"list_date": "2024-05-01"}, content=SIGNATORIES,
                     headers=headers).json()
    assert (again["recorded"], again["already"]) == (0, 3)
    assert {pid: events(api, pid) for pid in (sunrise, valley, harbor)} == history


def test_a_dsa_list_that_cannot_be_read_is_refused_whole(api: TestClient) -> None:
    """Bad HTTP input is a 4xx problem, never a 500, and names columns, never values."""
    headers = {**STAFF, "content-type": "text/csv"}
    no_name = api.post("/agreements/dsa-signatories", content="npi,tin\n1234567893,\n", headers=headers)
    assert no_name.status_code == 422 and "legal_name" in no_name.json()["detail"]
    latin1 = api.post("/agreements/dsa-signatories", content="legal_name\nCaf\xe9\n".encode("latin-1"), headers=headers)
    assert latin1.status_code == 422
    bad_date = api.post("/agreements/dsa-signatories", params={"list_date": "yesterday"}, content="legal_name\nX\n",
                        headers=headers)
    assert bad_date.status_code == 422
    assert api.post("/agreements/dsa-signatories", content="legal_name\nX\n",
                    headers={"Authorization": "Bearer auditor-token"}).status_code == 403


def test_dsi_enrollment_import_dsa_list(api: TestClient, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dsi enrollment import-dsa-list FILE` posts the list to the enrollment service and prints the report."""
    sunrise = register(api)["id"]
    path = tmp_path / "dsa.csv"
    path.write_text(SIGNATORIES)

    def post(url: str, **kwargs: Any) -> httpx.Response:
        assert url == "http://enrollment.test/agreements/dsa-signatories"
        return api.post("/agreements/dsa-signatories", params=kwargs["params"], content=kwargs["content"],
                        headers=kwargs["headers"])

    monkeypatch.setattr(httpx, "post", post)
    run: Callable[..., Any] = CliRunner().invoke
    result = run(cli, ["enrollment", "import-dsa-list", str(path), "--url", "http://enrollment.test", "--token", "staff",
                       "--list-date", "2024-04-01"])
    assert result.exit_code == 0, result.output
    assert "1 matched by NPI/TIN" in result.output and "1 recorded" in result.output
    assert show(api, sunrise)["agreements"]["DSA"]["status"] == "accepted"
    as_json = run(cli, ["enrollment", "import-dsa-list", str(path), "--url", "http://enrollment.test", "--token", "staff",
                        "--json"])
    assert as_json.exit_code == 0 and '"already": 1' in as_json.output
    wrong = run(cli, ["enrollment", "import-dsa-list", str(path), "--url", "http://enrollment.test", "--token", "nope"])
    assert wrong.exit_code == 1
