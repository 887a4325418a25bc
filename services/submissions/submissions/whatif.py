"""What-if, submissions' part (issue 11 §5): every recorded file and record judged again from its recorded facts
under a rules book — the current one, or one with a proposed version — by the same pure rules that judged it
(`judge_snf_file`, `judge_record`), in the order received so one event still earns once. Nothing is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from dsi_shared.audit import WhatIfContext
from dsi_shared.plantime import QuarterCalendar
from dsi_shared.rulebook import RuleBook
from dsi_shared.service import AuditReport, rebuild_aggregates

from submissions.application import HL7_TYPE, Submissions
from submissions.domain import (
    CREDITED,
    REJECTED,
    ZERO,
    MemberFacts,
    ParticipantFacts,
    Submission,
    judge_record,
    judge_snf_file,
    resolve_member,
)


@dataclass(frozen=True)
class FileOutcome:
    submission_id: str
    quarter: str  # of the HIE's receipt
    verdict: str
    reasons: tuple[str, ...]
    amount: Decimal
    earning_rule: str | None
    member_id: str | None
    rule_version: str | None


def judge_all(app: Submissions, books: dict[str, RuleBook],
              calendar: QuarterCalendar) -> dict[str, dict[str, list[FileOutcome]]]:
    """Per book name, per participant, each judgeable file or record (cancelled credits stay cancelled), in the
    quarter of its receipt on the program's `calendar` (the same under every book, even one with no version yet).
    The store is read once, in one pass over its log, as the audit replay reads it."""
    aggregates = {a.id: a for a in rebuild_aggregates(app, AuditReport())}

    def member(cin: str | None) -> MemberFacts | None:
        return resolve_member(cin, aggregates.get) if cin else None

    outcomes: dict[str, dict[str, list[FileOutcome]]] = {name: {} for name in books}
    credited_events: dict[str, set[str]] = {name: set() for name in books}
    for submission in aggregates.values():
        if not isinstance(submission, Submission) or submission.participant_id is None \
                or "rejudgeable" not in submission.facts:
            continue
        participant = aggregates.get(ParticipantFacts.create_id(submission.participant_id))
        known = member(submission.facts.get("member_id"))
        for name, book in books.items():
            outcome = _judge(submission, participant, known, book, calendar, credited_events[name])
            outcomes[name].setdefault(str(submission.participant_id), []).append(outcome)
    return outcomes


def _judge(submission: Submission, participant: ParticipantFacts | None, member: MemberFacts | None, book: RuleBook,
           calendar: QuarterCalendar, credited_events: set[str]) -> FileOutcome:
    facts = submission.facts
    member_id = facts.get("member_id")
    if submission.content_type == HL7_TYPE:
        event_time = submission.event_time
        judgment = judge_snf_file(event_type=facts["event_type"], event_time=event_time,
                                  received_at=submission.received_at, messages=facts["messages"], member=member,
                                  participant=participant, book=book)
        if judgment.verdict == CREDITED and event_time is not None:
            key = f"{submission.participant_id}|{member.cin if member else member_id}|{facts['visit']}|{submission.event_key}"
            if key in credited_events:
                return _outcome(submission, calendar, REJECTED, ("duplicate",), ZERO, None, member_id, judgment.rule_version)
            if submission.reversed_by is None:  # a cancelled credit is no duplicate of the event sent again
                credited_events.add(key)
    else:
        judgment = judge_record(problems=facts.get("problems", []), received_at=submission.received_at, member=member,
                                participant=participant, book=book)
    if judgment.verdict == CREDITED and submission.reversed_by is not None:
        return _outcome(submission, calendar, REJECTED, (f"cancelled_by:{submission.reversed_by}",), ZERO,
                        judgment.earning_rule, member_id, judgment.rule_version)
    return _outcome(submission, calendar, judgment.verdict, tuple(judgment.reasons), judgment.amount, judgment.earning_rule,
                    member.cin if member else member_id, judgment.rule_version)


def _outcome(submission: Submission, calendar: QuarterCalendar, verdict: str, reasons: tuple[str, ...], amount: Decimal,
             rule: str | None, member_id: str | None, rule_version: str | None) -> FileOutcome:
    return FileOutcome(str(submission.id), str(calendar.quarter_at(submission.received_at)), verdict, reasons, amount, rule,
                       member_id, rule_version)


def what_if(app: object, context: WhatIfContext) -> None:
    """The service's what-if hook: files under the current book (this store's copy) and under the proposed one."""
    assert isinstance(app, Submissions)
    current, proposed = context.books(app.rulebook())
    context.files = judge_all(app, {"current": current, "proposed": proposed}, proposed.calendar)
