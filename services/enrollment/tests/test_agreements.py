"""Agreements on the Participant aggregate (DOMAIN.md A2): the same signature twice is one; signed is not accepted;
due dates and signing extensions are events."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from enrollment.application import Enrollment
from enrollment.domain import AGREEMENTS, BY_CONTRACTS_SYSTEM, InvalidAgreement, InvalidTransition, Participant

from tests.oldevents import rebuilt_without


def participant() -> Participant:
    return Participant(legal_name="Sunrise", npi="1234567893", tin=None, provider_type="skilled_nursing",
                       counties=["Monterey"], ehr_product="PCC", is_hospital=False, umbrella_group=None,
                       manages_ehr=True, sending_facilities=["SUNRISE"], contact_email="a@b.example",
                       submitted_on=date(2024, 3, 1))


def test_the_same_signature_reported_twice_is_one_signature() -> None:
    p = participant()
    signed_at = datetime(2024, 5, 1, 17, tzinfo=UTC)
    assert p.sign("DSA", signed_at, "doc-1", "http") is True
    assert p.sign("DSA", signed_at, "doc-1", "nats") is False
    assert [s["channel"] for s in p.signatures] == ["http"]


def test_a_second_document_for_the_same_agreement_is_kept_but_the_first_dates_it() -> None:
    p = participant()
    p.sign("LOA", datetime(2024, 5, 1, tzinfo=UTC), "doc-1", "http")
    p.sign("LOA", datetime(2024, 6, 1, tzinfo=UTC), "doc-2", "http")
    assert len(p.signatures) == 2
    assert p.agreement("LOA") == {"agreement": "LOA", "signed_at": datetime(2024, 5, 1, tzinfo=UTC),
                                  "document_id": "doc-1", "channel": "http", "review": None}


def test_unknown_agreements_and_times_without_offset_are_refused() -> None:
    p = participant()
    with pytest.raises(InvalidAgreement):
        p.sign("NDA", datetime(2024, 5, 1, tzinfo=UTC), "d", "http")
    with pytest.raises(InvalidAgreement):
        p.sign("LOA", datetime(2024, 5, 1), "d", "http")
    assert p.signatures == []


def reviews(p: Participant) -> list[dict[str, object]]:
    return [{k: v for k, v in vars(e).items() if k in {"agreement", "document_id", "decision", "reason", "decided_by"}}
            for e in p.collect_events() if type(e).__name__ == "AgreementReviewed"]


def sign_all(p: Participant) -> None:
    for kind in AGREEMENTS:
        p.sign(kind, datetime(2024, 5, 1, 17, tzinfo=UTC), f"doc-{kind}", "http")


def test_a_signed_agreement_is_awaiting_review_until_accepted() -> None:
    """"Once all these documents have been signed and accepted, you will have completed Milestone 1." Signed and
    not rejected is not accepted: one staff action accepts every signed, not yet reviewed document, one
    AgreementReviewed (decision accepted) each; a rejected one stays rejected."""
    p = participant()
    sign_all(p)
    p.review("HIE", "doc-HIE", "rejected", "wrong entity")
    p.collect_events()
    assert [p.agreement_state(k)["status"] for k in AGREEMENTS] == ["awaiting_review", "awaiting_review", "rejected"]  # type: ignore[index]
    assert not any(p.accepted(k) for k in AGREEMENTS)
    assert p.accept_signed("looked at all three") == [{"agreement": "LOA", "document_id": "doc-LOA"},
                                                      {"agreement": "DSA", "document_id": "doc-DSA"}]
    assert reviews(p) == [
        {"agreement": kind, "document_id": f"doc-{kind}", "decision": "accepted", "reason": "looked at all three",
         "decided_by": "staff"} for kind in ("LOA", "DSA")]
    assert [p.agreement_state(k)["status"] for k in AGREEMENTS] == ["accepted", "accepted", "rejected"]  # type: ignore[index]
    assert p.accept_signed("again") == [] and reviews(p) == []
    assert p.agreement_state("HIE")["signed"] is True  # type: ignore[index]
    assert p.agreement("HIE") is None  # a rejected signature never counts


def test_an_acceptance_before_its_signature_is_held_and_applied_when_the_signature_arrives() -> None:
    """"Accepted means accepted by staff review or by the counterparty (an acceptance event ...)": an acceptance
    from the contracts system for a signature not recorded yet is held, then recorded as the same AgreementReviewed
    the moment the signature arrives."""
    p = participant()
    accepted_at = datetime(2024, 5, 3, 9, tzinfo=UTC)
    assert p.accept("LOA", "doc-LOA", "accepted by the contracts system", BY_CONTRACTS_SYSTEM, accepted_at) is True
    assert p.accept("LOA", "doc-LOA", "accepted by the contracts system", BY_CONTRACTS_SYSTEM, accepted_at) is False
    assert p.agreement_state("LOA") is None and reviews(p) == []
    p.sign("LOA", datetime(2024, 5, 1, tzinfo=UTC), "doc-LOA", "nats")
    assert reviews(p) == [{"agreement": "LOA", "document_id": "doc-LOA", "decision": "accepted",
                           "reason": "accepted by the contracts system", "decided_by": "contracts-system"}]
    assert p.agreement_state("LOA")["review"]["accepted_at"] == accepted_at  # type: ignore[index]
    assert p.held_acceptances == []


def test_an_outside_acceptance_never_overrides_a_staff_decision() -> None:
    """"merely not-rejected is not accepted" — and a staff rejection stands: the counterparty's acceptance of a
    rejected document changes nothing (staff may still accept it by review)."""
    p = participant()
    p.sign("DSA", datetime(2024, 5, 1, tzinfo=UTC), "doc-DSA", "http")
    p.review("DSA", "doc-DSA", "rejected", "illegible")
    p.collect_events()
    assert p.accept("DSA", "doc-DSA", "accepted by the contracts system", BY_CONTRACTS_SYSTEM) is False
    assert p.agreement_state("DSA")["status"] == "rejected" and reviews(p) == []  # type: ignore[index]
    with pytest.raises(InvalidAgreement):
        p.accept("DSA", "doc-DSA", "x", BY_CONTRACTS_SYSTEM, datetime(2024, 5, 1))  # no offset


def test_the_participant_due_date_and_signing_extension_are_events() -> None:
    """"submitted by the provider's respective due date (to be determined during agreement execution)": staff
    set it (AgreementDueDateSet); a signing extension (SigningExtensionGranted) is recorded the same way."""
    p = participant()
    p.collect_events()
    assert p.set_due_date(date(2024, 11, 30), "LOA executed 2024-05-01") is True
    assert p.set_due_date(date(2024, 11, 30), "again") is False
    assert p.extend_signing(date(2024, 6, 1), "board meets in May") is True
    events = p.collect_events()
    assert [(type(e).__name__, e.due_on if hasattr(e, "due_on") else e.until) for e in events] == [  # type: ignore[attr-defined]
        ("AgreementDueDateSet", date(2024, 11, 30)), ("SigningExtensionGranted", date(2024, 6, 1))]
    assert p.due_date == {"due_on": date(2024, 11, 30), "reason": "LOA executed 2024-05-01"}
    with pytest.raises(InvalidTransition):
        p.set_due_date(date(2024, 12, 1), " ")


def test_events_stored_before_these_fields_existed_still_load() -> None:
    """eventsourcing rebuilds events from stored kwargs: a ParticipantRegistered stored without
    `previous_application`/`organization_id`, and an AgreementReviewed without `decided_by`, still load."""
    app = Enrollment("memory://")
    p = participant()
    p.sign("LOA", datetime(2024, 5, 1, tzinfo=UTC), "doc-LOA", "http")
    p.review("LOA", "doc-LOA", "accepted", None)
    rebuilt = rebuilt_without(app, p, ("previous_application", "organization_id", "decided_by", "accepted_at"))
    assert isinstance(rebuilt, Participant)
    assert (rebuilt.previous_application, rebuilt.organization_id, rebuilt.organization) == (None, None, rebuilt.id)
    assert rebuilt.agreement_state("LOA")["review"] == {"decision": "accepted", "reason": None, "decided_by": "staff"}  # type: ignore[index]
