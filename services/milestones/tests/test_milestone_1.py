"""Milestone 1 (DOMAIN.md A2.4) and the data-capture quarter (A4), as pure rules."""

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
    quarter_of,
)

T0 = datetime(2024, 5, 1, 17, 0, tzinfo=UTC)
SNF_DEADLINE = date(2024, 9, 30)
ALL_THREE = {"LOA", "DSA", "HIE"}


def eligible_progress(deadline: date = SNF_DEADLINE) -> ParticipantProgress:
    progress = ParticipantProgress(uuid4())
    progress.note_eligibility(True, "2024.1", deadline)
    return progress


def sign_all(progress: ParticipantProgress, last_at: datetime) -> None:
    progress.note_agreement("LOA", T0, "l")
    progress.note_agreement("DSA", T0, "d")
    progress.note_agreement("HIE", last_at, "h")


def test_milestone_1_is_achieved_when_the_third_agreement_is_signed_at_its_time() -> None:
    progress = eligible_progress()
    progress.note_agreement("LOA", T0, "l")
    progress.note_agreement("DSA", T0 + timedelta(days=3), "d")
    assert MILESTONE_1 not in progress.achieved
    progress.note_agreement("HIE", T0 + timedelta(days=1), "h")
    m1 = progress.achieved[MILESTONE_1]
    assert (m1["amount"], m1["achieved_at"], m1["quarter"]) == (Decimal("10000.00"), T0 + timedelta(days=3), "2024Q2")
    assert (m1["basis"], m1["rule_version"], m1["deadline"]) == (["d", "h", "l"], "2024.1", SNF_DEADLINE)


def test_the_deadline_is_the_last_plan_local_day() -> None:
    on_time = eligible_progress()
    sign_all(on_time, datetime(2024, 10, 1, 6, 59, tzinfo=UTC))  # 23:59 PDT on September 30
    assert MILESTONE_1 in on_time.achieved
    late = eligible_progress()
    sign_all(late, datetime(2024, 10, 1, 7, 0, tzinfo=UTC))  # 00:00 PDT on October 1
    assert MILESTONE_1 not in late.achieved
    assert late.missed[MILESTONE_1]["reason"] == COMPLETED_AFTER_DEADLINE
    assert late.missed[MILESTONE_1]["deadline"] == SNF_DEADLINE


def test_an_ineligible_participant_never_achieves_milestone_1() -> None:
    progress = ParticipantProgress(uuid4())
    progress.note_eligibility(False, "2024.1", SNF_DEADLINE)
    sign_all(progress, T0)
    assert progress.achieved == {} and progress.missed == {}


def test_a_rejected_signature_does_not_count_until_a_new_one_arrives() -> None:
    progress = eligible_progress()
    progress.note_agreement("LOA", T0, "l")
    progress.note_agreement("DSA", T0, "d")
    progress.note_agreement("HIE", T0, "h-bad")
    assert MILESTONE_1 in progress.achieved  # decided at once: a later rejection does not take it back
    fresh = eligible_progress()
    fresh.note_agreement("HIE", T0, "h-bad")
    fresh.note_review("HIE", "h-bad", rejected=True)
    fresh.note_agreement("LOA", T0, "l")
    fresh.note_agreement("DSA", T0, "d")
    assert MILESTONE_1 not in fresh.achieved
    fresh.note_agreement("HIE", T0 + timedelta(days=2), "h-good")
    assert fresh.achieved[MILESTONE_1]["achieved_at"] == T0 + timedelta(days=2)


def test_leaving_before_completion_misses_milestone_1() -> None:
    progress = eligible_progress()
    progress.note_departure("withdrawn", date(2024, 5, 1))
    sign_all(progress, T0 + timedelta(days=1))
    assert progress.missed[MILESTONE_1]["reason"] == LEFT_BEFORE_COMPLETION


@given(st.permutations(["eligibility", "LOA", "DSA", "HIE", "LOA", "DSA"]))
def test_any_arrival_order_achieves_milestone_1_exactly_once(order: list[str]) -> None:
    progress = ParticipantProgress(uuid4())
    for i, fact in enumerate(order):
        if fact == "eligibility":
            progress.note_eligibility(True, "2024.1", SNF_DEADLINE)
        else:
            progress.note_agreement(fact, T0 + timedelta(hours=i), f"{fact}-{i}")
    achieved = [e for e in progress.collect_events() if type(e).__name__ == "MilestoneAchieved"]
    assert len(achieved) == 1
    assert progress.achieved[MILESTONE_1]["achieved_at"] <= T0 + timedelta(hours=len(order))


def test_quarters_follow_los_angeles_time_across_year_and_dst_edges() -> None:
    assert quarter_of(datetime(2024, 4, 1, 6, 59, tzinfo=UTC)) == "2024Q1"  # 23:59 PDT on March 31
    assert quarter_of(datetime(2024, 4, 1, 7, 0, tzinfo=UTC)) == "2024Q2"
    assert quarter_of(datetime(2025, 1, 1, 7, 59, tzinfo=UTC)) == "2024Q4"  # 23:59 PST on December 31
    assert quarter_of(datetime(2025, 1, 1, 8, 0, tzinfo=UTC)) == "2025Q1"
    assert quarter_of(datetime(2024, 3, 10, 10, 0, tzinfo=UTC)) == "2024Q1"  # the spring-forward morning
