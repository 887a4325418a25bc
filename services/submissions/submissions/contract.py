"""What submissions publishes (`dsi.submissions.*`): credits and their reversals — what milestones counts and pays —
and each file's verdict with its reason codes (what the console charts). The files' facts, the reasons' details and
the HIE's payloads stay in its store (the sender learns them from its ACK or the HTTP answer). A credit carries the
member's CIN: milestones counts distinct members for coverage (C3.1); a verdict carries none."""

from __future__ import annotations

from datetime import datetime
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


class FileJudged(PublicEvent):
    """A file or record was judged, or judged again (`aggregate_id` is the submission): the verdict it has now. Sent
    again whenever its verdict or reason codes change (judged again after Milestone 1 or a rules correction, a
    credit reversed by a cancel), so the latest per submission (highest `aggregate_version`) is the one that stands.

    Minimum necessary: who sent it, when it was received, the verdict and the reasons' codes. No CIN, no names, no
    payload, no clinical codes, not even the reasons' details (`duplicate_of:<id>` is published as `duplicate_of`)."""

    subject = "dsi.submissions.file-judged"
    recorded_as = "Submission.FileJudged"
    participant_id: UUID | None = Field(description="the participant it was received for (None: its sender resolved "
                                                    "to no participant, e.g. an unknown sending facility)")
    received_at: datetime = Field(description="when it was received: the receipt time its timeliness was judged by "
                                              "(the plan's clock, or the HIE's stated receipt for a backdated file)")
    verdict: str = Field(description="credited, rejected or recorded (kept, neither credited nor rejected)")
    reasons: list[str] = Field(description="the reasons' codes in order (e.g. late, duplicate_of, cancelled_by; "
                                           "empty for a credit that stands)")


CONTRACT = Contract("submissions", (SubmissionCredited, SubmissionCreditReversed, FileJudged))
