"""What the console knows of files' verdicts and quarters' evaluations, from the public event streams (issue 15 §1),
for its charts: one aggregate per file (`FileJudged`), per PCP coverage evaluation (`CoverageEvaluated`) and per
closed quarter (`QuarterClosed`), each turned into one SQL row by `readmodel`. Only what those events carry: no CIN,
no reasons' details, no member.

Each keeps what stands: a file its latest verdict (the highest `aggregate_version` submissions published: a
re-published older one changes nothing), an evaluation and a close their first noting (recorded once upstream)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class FileVerdict(Aggregate):
    """A file's verdict as submissions last stated it. Its id is the submission's."""

    @staticmethod
    def create_id(submission_id: UUID) -> UUID:
        return submission_id

    @event("Opened")
    def __init__(self, submission_id: UUID) -> None:
        self.as_of = 0  # the submission's version the verdict is as of (0: none noted)
        self.participant_id: str | None = None
        self.received_at = ""  # ISO 8601, with the offset it was recorded with
        self.verdict = ""
        self.reasons: list[str] = []  # codes

    @event("VerdictNoted")
    def note(self, as_of: int, participant_id: str | None, received_at: str, verdict: str, reasons: list[str]) -> None:
        self.as_of, self.participant_id, self.received_at = as_of, participant_id, received_at
        self.verdict, self.reasons = verdict, reasons


def judged(verdict: FileVerdict, version: int, participant_id: str | None, received_at: str, verdict_now: str,
           reasons: list[str]) -> FileVerdict:
    """The file's verdict as of `version` of its submission, noted only when it is later than the one kept."""
    if version > verdict.as_of:
        verdict.note(as_of=version, participant_id=participant_id, received_at=received_at, verdict=verdict_now,
                     reasons=reasons)
    return verdict


class CoverageFigures(Aggregate):
    """A PCP's coverage evaluation as milestones recorded it. Its id is the evaluation's; the order the console noted
    them in (its read model's `seq`) is the order milestones recorded them."""

    @staticmethod
    def create_id(evaluation_id: UUID) -> UUID:
        return evaluation_id

    @event("Noted")
    def __init__(self, evaluation_id: UUID, participant_id: str, quarter: str, threshold_percent: int | None,
                 attributed_members: int, members_with_record: int, coverage_percent: str) -> None:
        self.participant_id, self.quarter, self.threshold_percent = participant_id, quarter, threshold_percent
        self.attributed_members, self.members_with_record = attributed_members, members_with_record
        self.coverage_percent = coverage_percent  # a decimal string, as milestones evaluated it


class ClosedQuarter(Aggregate):
    """A quarter milestones closed, and how many evaluations its close recorded."""

    @staticmethod
    def create_id(quarter: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/console/quarter/{quarter}")

    @event("Noted")
    def __init__(self, quarter: str, evaluations: int) -> None:
        self.quarter, self.evaluations = quarter, evaluations
