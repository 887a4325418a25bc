"""Milestone 1 (DOMAIN.md A2.4) and the data-capture quarter (A4), as pure rules under the rules book."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st
from milestones.domain import (
    COMPLETED_AFTER_DEADLINE,
    LEFT_BEFORE_COMPLETION,
    MILESTONE_1,
    ParticipantProgress,
)

from tests.rulesdoc import amended, book

T0 = datetime(2024, 5, 1, 17, 0, tzinfo=UTC)
SNF_DEADLINE = date(2024, 9, 30)
BOOK = book()


def eligible_progress(provider_type: str = "skilled_nursing") -> ParticipantProgress:
    progress = ParticipantProgress(uuid4())
    progress.note_registration(provider_type, "1234567890", "Sunrise")
    progress.note_eligibility(True, "2024.1")
    return progress


def signed(progress: ParticipantProgress, agreement: str, at: datetime, document: str, accept: bool = True) -> None:
    progress.note_agreement(agreement, at, document)
    if accept:
        progress.note_review(agreement, document, "accepted")
    progress.decide_milestone_1(BOOK)


def sign_all(progress: ParticipantProgress, last_at: datetime) -> None:
    signed(progress, "LOA", T0, "l")
    signed(progress, "DSA", T0, "d")
    signed(progress, "HIE", last_at, "h")


def test_milestone_1_is_achieved_when_the_third_agreement_is_signed_at_its_time() -> None:
    progress = eligible_progress()
    signed(progress, "LOA", T0, "l")
    signed(progress, "DSA", T0 + timedelta(days=3), "d")
    assert MILESTONE_1 not in progress.achieved
    signed(progress, "HIE", T0 + timedelta(days=1), "h")
    m1 = progress.achieved[MILESTONE_1]
    assert (m1["amount"], m1["achieved_at"], m1["quarter"]) == (Decimal("10000.00"), T0 + timedelta(days=3), "2024Q2")
    assert (m1["basis"], m1["rule_version"], m1["deadline"]) == (["d", "h", "l"], "2024.1", SNF_DEADLINE)


def test_signed_is_not_enough_each_agreement_must_also_be_accepted() -> None:
    """"Once all these documents have been signed and accepted, you will have completed Milestone 1." Merely
    not rejected is not accepted."""
    progress = eligible_progress()
    signed(progress, "LOA", T0, "l", accept=False)
    signed(progress, "DSA", T0, "d")
    signed(progress, "HIE", T0, "h")
    assert progress.achieved == {} and progress.missed == {}
    progress.note_review("LOA", "l", "accepted")  # e.g. the staff's one-click acceptance, weeks later
    progress.decide_milestone_1(BOOK)
    assert progress.achieved[MILESTONE_1]["achieved_at"] == T0  # dated by the signatures, by the due date


def test_the_deadline_is_the_last_plan_local_day() -> None:
    on_time = eligible_progress()
    sign_all(on_time, datetime(2024, 10, 1, 6, 59, tzinfo=UTC))  # 23:59 PDT on September 30
    assert MILESTONE_1 in on_time.achieved
    late = eligible_progress()
    sign_all(late, datetime(2024, 10, 1, 7, 0, tzinfo=UTC))  # 00:00 PDT on October 1
    assert MILESTONE_1 not in late.achieved
    assert late.missed[MILESTONE_1]["reason"] == COMPLETED_AFTER_DEADLINE
    assert late.missed[MILESTONE_1]["deadline"] == SNF_DEADLINE


def test_a_participants_own_due_date_set_at_loa_execution_replaces_the_types_date() -> None:
    """"submitted by the provider's respective due date (to be determined during agreement execution)": the type's
    Milestone 1 date is only the default."""
    progress = eligible_progress()
    progress.note_due_date(date(2024, 11, 15))
    sign_all(progress, datetime(2024, 11, 1, 17, tzinfo=UTC))
    assert progress.achieved[MILESTONE_1]["deadline"] == date(2024, 11, 15)


def test_the_amount_and_date_are_the_rules_version_in_force_and_a_correction_turns_a_miss_into_achievement() -> None:
    """"A version published later that is effective earlier (a correction) reaches every participant already
    enrolled" — a missed Milestone 1 is decided again; an achieved one is never taken back."""
    progress = eligible_progress()
    sign_all(progress, datetime(2024, 10, 20, 17, tzinfo=UTC))
    assert progress.missed[MILESTONE_1]["reason"] == COMPLETED_AFTER_DEADLINE
    extended = amended("2024.2", "2024-01-01", {"provider_types.skilled_nursing.milestone1_by": "2024-10-31",
                                                "provider_types.skilled_nursing.milestone1_amount": "12000.00"})
    progress.decide_milestone_1(book(extended))
    m1 = progress.achieved[MILESTONE_1]
    assert (m1["amount"], m1["rule_version"], m1["deadline"]) == (Decimal("12000.00"), "2024.2", date(2024, 10, 31))
    assert MILESTONE_1 not in progress.missed
    progress.decide_milestone_1(BOOK)  # the original book again: achieved stays achieved
    assert progress.achieved[MILESTONE_1]["amount"] == Decimal("12000.00")


def test_an_ineligible_participant_never_achieves_milestone_1() -> None:
    progress = ParticipantProgress(uuid4())
    progress.note_registration("skilled_nursing", None, "x")
    progress.note_eligibility(False, "2024.1")
    sign_all(progress, T0)
    assert progress.achieved == {} and progress.missed == {}


def test_a_rejected_signature_does_not_count_until_a_new_one_arrives() -> None:
    fresh = eligible_progress()
    signed(fresh, "HIE", T0, "h-bad", accept=False)
    fresh.note_review("HIE", "h-bad", "rejected")
    signed(fresh, "LOA", T0, "l")
    signed(fresh, "DSA", T0, "d")
    assert MILESTONE_1 not in fresh.achieved
    signed(fresh, "HIE", T0 + timedelta(days=2), "h-good")
    assert fresh.achieved[MILESTONE_1]["achieved_at"] == T0 + timedelta(days=2)


def test_a_paid_milestone_whose_agreement_is_rejected_later_is_a_finding_not_a_clawback() -> None:
    """"A Milestone 1 already paid whose agreement is later rejected is shown as a finding for staff, never clawed
    back silently." """
    progress = eligible_progress()
    sign_all(progress, T0)
    progress.note_review("HIE", "h", "rejected")
    progress.decide_milestone_1(BOOK)
    assert MILESTONE_1 in progress.achieved
    assert progress.findings == [{"milestone": "M1", "finding": "basis_agreement_rejected_after_payment",
                                  "document_id": "h"}]


def test_leaving_before_completion_misses_milestone_1() -> None:
    progress = eligible_progress()
    progress.note_departure("withdrawn", date(2024, 5, 1))
    sign_all(progress, T0 + timedelta(days=1))
    assert progress.missed[MILESTONE_1]["reason"] == LEFT_BEFORE_COMPLETION


@given(st.permutations(["eligibility", "LOA", "DSA", "HIE", "LOA", "DSA"]))
def test_any_arrival_order_achieves_milestone_1_exactly_once(order: list[str]) -> None:
    progress = ParticipantProgress(uuid4())
    progress.note_registration("skilled_nursing", None, "x")
    for i, fact in enumerate(order):
        if fact == "eligibility":
            progress.note_eligibility(True, "2024.1")
        else:
            progress.note_agreement(fact, T0 + timedelta(hours=i), f"{fact}-{i}")
            progress.note_review(fact, f"{fact}-{i}", "accepted")
        progress.decide_milestone_1(BOOK)
    achieved = [e for e in progress.collect_events() if type(e).__name__ == "MilestoneAchieved"]
    assert len(achieved) == 1
    assert progress.achieved[MILESTONE_1]["achieved_at"] <= T0 + timedelta(hours=len(order))


def test_quarters_follow_los_angeles_time_across_year_and_dst_edges() -> None:
    """Under the shipped calendar: "Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec (America/Los_Angeles)"."""

    def quarter_of(moment: datetime) -> str:
        return str(BOOK.calendar.quarter_at(moment))

    assert quarter_of(datetime(2024, 4, 1, 6, 59, tzinfo=UTC)) == "2024Q1"  # 23:59 PDT on March 31
    assert quarter_of(datetime(2024, 4, 1, 7, 0, tzinfo=UTC)) == "2024Q2"
    assert quarter_of(datetime(2025, 1, 1, 7, 59, tzinfo=UTC)) == "2024Q4"  # 23:59 PST on December 31
    assert quarter_of(datetime(2025, 1, 1, 8, 0, tzinfo=UTC)) == "2025Q1"
    assert quarter_of(datetime(2024, 3, 10, 10, 0, tzinfo=UTC)) == "2024Q1"  # the spring-forward morning
