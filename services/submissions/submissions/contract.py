"""What submissions publishes (`dsi.submissions.*`): credits and their reversals — what milestones counts and pays.
Verdicts, the files' facts and the HIE's payloads stay in its store (the sender learns a verdict from its ACK or
the HTTP answer). A credit carries the member's CIN: milestones counts distinct members for coverage (C3.1)."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from dsi_shared.contracts import Contract, PublicEvent
from pydantic import Field


class SubmissionCredited(PublicEvent):
    """A file or record earned a credit (`aggregate_id` is the submission)."""

    subject = "dsi.submissions.submission-credited"
    recorded_as = "Submission.SubmissionCredited"
    participant_id: UUID
    member_id: str = Field(description="the member's CIN (coverage counts distinct members)")
    amount: Decimal = Field(description="dollars per the earning rule (0 for coverage records)")
    rule_version: str
    earning_rule: str = Field(description="per_qualifying_file or coverage_per_period")
    quarter: str = Field(description="the program quarter the credit counts in, e.g. 2025Q4")


class SubmissionCreditReversed(PublicEvent):
    """A credited file was cancelled (A11/A12/A13): its credit no longer counts."""

    subject = "dsi.submissions.submission-credit-reversed"
    recorded_as = "Submission.SubmissionCreditReversed"
    participant_id: UUID
    cancelled_by: UUID = Field(description="the cancelling submission")
    quarter: str


CONTRACT = Contract("submissions", (SubmissionCredited, SubmissionCreditReversed))
