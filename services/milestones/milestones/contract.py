"""What milestones publishes (`dsi.milestones.*`): milestones achieved or missed, a PCP's coverage as evaluated,
evaluations validated for payment and quarter closes. Credit ledgers, rosters and members' attribution copies stay in
its store (they hold CINs); coverage leaves it as counts only."""

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


class CoverageEvaluated(PublicEvent):
    """A quarter close recorded a PCP's coverage evaluation (`aggregate_id` is the evaluation; pending staff's
    validation): its figures against the threshold. An adjustment for late records is one more, in the quarter of the
    close that made it; of a participant's evaluations in a quarter, the latest recorded stands.

    Minimum necessary: aggregate numbers only. No member id, and not the credits counted (`EvaluationValidated`
    names those for payments)."""

    subject = "dsi.milestones.coverage-evaluated"
    recorded_as = "Evaluation.CoverageEvaluated"
    participant_id: UUID
    quarter: str = Field(description="the quarter of the close that recorded it, e.g. 2025Q1")
    threshold_percent: int | None = Field(description="the threshold it was held to (None: no milestone this quarter)")
    attributed_members: int = Field(description="members attributed to the PCP in the quarter")
    members_with_record: int = Field(description="of those, members with a credited longitudinal record")
    coverage_percent: Decimal = Field(description="members_with_record ÷ attributed_members in percent, to the "
                                                  "hundredth, as milestones evaluated it (0 with nobody attributed)")


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


CONTRACT = Contract("milestones", (MilestoneAchieved, MilestoneMissed, CoverageEvaluated, EvaluationValidated,
                                   QuarterClosed))
