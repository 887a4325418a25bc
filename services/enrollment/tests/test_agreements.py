"""Agreements on the Participant aggregate (DOMAIN.md A2): the same signature twice is one."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from enrollment.domain import InvalidAgreement, Participant


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
