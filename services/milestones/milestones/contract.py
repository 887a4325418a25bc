"""What milestones publishes (`dsi.milestones.*`): milestones achieved or missed, evaluations validated for payment
and quarter closes. Credit ledgers, rosters and members' attribution copies stay in its store (they hold CINs)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from dsi_shared.contracts import Contract, PublicEvent
from pydantic import Field


class MilestoneAchieved(PublicEvent):
    """A participant earned a milestone (`aggregate_id` is its progress record): payments pays it."""

    subject = "dsi.milestones.milestone-achieved"
    recorded_as = "ParticipantProgress.MilestoneAchieved"
    participant_id: UUID
    milestone: str = Field(description="M1 … M4")
    amount: Decimal
    achieved_at: datetime
    quarter: str
    rule_version: str
    deadline: date
    basis: list[str] = Field(description="the agreement documents (Milestone 1) it rests on")


class MilestoneMissed(PublicEvent):
    """A participant can no longer earn a milestone, and why."""

    subject = "dsi.milestones.milestone-missed"
    recorded_as = "ParticipantProgress.MilestoneMissed"
    participant_id: UUID
    milestone: str
    reason: str
    completed_at: datetime
    deadline: date | None
    rule_version: str


class EvaluationValidated(PublicEvent):
    """Program staff validated a quarter's evaluation: what it earned, and the credits it counted."""

    subject = "dsi.milestones.evaluation-validated"
    recorded_as = "Evaluation.EvaluationValidated"
    participant_id: UUID
    quarter: str
    milestone: str | None = Field(description="the milestone earned (None: nothing earned)")
    earned: Decimal
    rule_version: str
    credits: list[str] = Field(description="the submissions the evaluation counted")
    validated_at: datetime


class QuarterClosed(PublicEvent):
    """A quarter was closed: every participant's evaluation for it is recorded."""

    subject = "dsi.milestones.quarter-closed"
    recorded_as = "CloseCalendar.QuarterClosed"
    quarter: str
    closed_at: datetime
    evaluations: int
    participants: int
    earned: Decimal


CONTRACT = Contract("milestones", (MilestoneAchieved, MilestoneMissed, EvaluationValidated, QuarterClosed))
