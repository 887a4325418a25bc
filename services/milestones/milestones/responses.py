"""Milestones' response bodies, as the OpenAPI documents them (issue 12 §5). Money is a decimal string, times
ISO 8601. An evaluation's `figures` are the earning rule's own inputs (their keys depend on the rule's kind), so
they stay an open object on purpose."""

from __future__ import annotations

from typing import Any

from dsi_shared.http import Answer
from pydantic import Field


class EvaluationView(Answer):
    id: str
    participant_id: str
    quarter: str
    subject: str = Field(description="`quarter`, or the adjustment it is")
    milestone: str | None
    earning_rule: str | None
    rule_version: str
    earned: str
    outcome: str
    figures: dict[str, Any]
    state: str = Field(description="pending_validation, validated or rejected")
    decision: dict[str, Any] | None = Field(description="who validated or rejected it, when (and why)")


class Progress(Answer):
    participant_id: str
    provider_type: str | None
    eligibility: dict[str, Any] | None
    schedule: dict[str, Any] | None = Field(description="the type's row in the rules in force today")
    agreement_due_on: str | None
    agreements: dict[str, dict[str, Any]]
    signatures: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    milestones: list[dict[str, Any]] = Field(description="each achieved or missed milestone with its facts")
    evaluations: list[EvaluationView]


class QuarterClose(Answer):
    quarter: str
    already_closed: bool
    closed_at: str
    closed_by: str
    evaluations: int
    participants: int
    earned: str
    adjustments: int


class ClosedQuarter(Answer):
    quarter: str
    already_closed: bool
    closed_at: str
    closed_by: str
    evaluations: list[EvaluationView] = Field(description="the quarter's evaluations (the close's count, listed)")
    participants: int
    earned: str
    adjustments: int


class EvaluationList(Answer):
    count: int = Field(description="every evaluation matching the filters (this page holds at most `limit`)")
    evaluations: list[EvaluationView]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
