"""The submissions Application: payloads in, Submissions with verdicts out (DOMAIN.md A3).

`evaluate_*` decide and return the aggregates to save (so a NATS consumer can save them with its tracking
record); `receive_*` also save them, re-deciding on an optimistic-concurrency conflict (two copies of one event
racing: exactly one credits, the other becomes `duplicate_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from dsi_shared.blobs import Blob, BlobStore
from dsi_shared.cipher import PayloadCipher, sha256_of
from dsi_shared.errors import NotFound
from dsi_shared.plantime import PLAN_ZONE, quarter_of
from dsi_shared.store import ServiceApplication
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from submissions import hl7files, longitudinal
from submissions.ack import build_ack
from submissions.domain import (
    PCP_RULE,
    SNF_FILE_AMOUNT,
    SNF_RULE,
    ZERO,
    CinAliasFacts,
    FacilityIndex,
    MemberFacts,
    ParticipantFacts,
    Submission,
    VisitCredits,
    participant_reasons,
    snf_file_reasons,
)

HL7_TYPE, FHIR_TYPE, CDA_TYPE = "x-application/hl7-v2+er7", "application/fhir+json", "application/cda+xml"


@dataclass
class MessageAnswer:
    """What one HL7 message gets back: its ACK, and the verdict of the submission it belongs to."""

    control_id: str
    ack_code: str
    ack: str
    problems: list[str]
    submission_id: UUID | None = None
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    answers: list[MessageAnswer]
    submissions: list[Submission]
    aggregates: list[Aggregate]


class Submissions(ServiceApplication):
    name = "submissions"

    def __init__(self, store_url: str, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(store_url, extra_env)
        self._cipher: PayloadCipher | None = None
        self.blobs = BlobStore(self)

    @property
    def cipher(self) -> PayloadCipher:
        if self._cipher is None:
            self._cipher = PayloadCipher()
        return self._cipher

    # -- lookups ----------------------------------------------------------------------------------------------
    def _get(self, aggregate_id: UUID) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def participant_facts(self, participant_id: UUID) -> ParticipantFacts | None:
        found: ParticipantFacts | None = self._get(ParticipantFacts.create_id(participant_id))
        return found

    def participant_for_facility(self, facility_ids: tuple[str, ...]) -> UUID | None:
        for facility in facility_ids:
            index: FacilityIndex | None = self._get(FacilityIndex.create_id(facility))
            if index is not None:
                return index.participant_id
        return None

    def member_facts(self, cin: str) -> MemberFacts | None:
        member: MemberFacts | None = self._get(MemberFacts.create_id(cin))
        if member is None:
            alias: CinAliasFacts | None = self._get(CinAliasFacts.create_id(cin))
            if alias is not None:
                member = self._get(MemberFacts.create_id(alias.current_cin))
        return member

    def submission(self, submission_id: UUID) -> Submission:
        found = self._get(submission_id)
        if not isinstance(found, Submission):
            raise NotFound("no such submission")
        return found

    def submissions_of(self, participant_id: UUID, limit: int = 500) -> list[Submission]:
        found = [s for s in map(self.submission, self.ids_created_with(Submission.SubmissionReceived))  # type: ignore[attr-defined]
                 if s.participant_id == participant_id]
        return found[-limit:]

    def payload(self, sha256: str) -> bytes:
        stored = self.blobs.get(sha256)
        if stored is None:
            raise NotFound("no such payload")
        return self.cipher.decrypt(stored.data, sha256, stored.key_id)

    def _store_payload(self, data: bytes, content_type: str) -> str:
        """Kept before the submission's events are saved: a payload without a submission (a crash between the
        two) is harmless, being content-addressed; a submission is never without its payload."""
        sha256 = sha256_of(data)
        self.blobs.put(Blob(sha256, len(data), content_type, self.cipher.key_id, self.cipher.encrypt(data, sha256)))
        return sha256

    # -- HL7 v2 (skilled nursing) ---------------------------------------------------------------------------------
    def evaluate_hl7(self, data: bytes, received_at: datetime, channel: str, hie_submission_id: str | None = None,
                     participant_hint: UUID | None = None) -> Evaluation:
        aggregates: list[Aggregate] = []
        sha256 = self._store_payload(data, HL7_TYPE)
        text = _decode(data)
        try:
            if text is None:
                raise hl7files.NotHL7("the payload is not UTF-8 text and declares no ISO 8859/1 character set")
            messages = [hl7files.parse_message(i, m) for i, m in enumerate(hl7files.split_messages(text))]
        except hl7files.NotHL7 as exc:
            submission = Submission(channel, received_at, HL7_TYPE, sha256, hie_submission_id, participant_hint,
                                    {"messages": []})
            submission.reject(["not_hl7"])
            ack = build_ack("AR", "", problems=[str(exc)])
            return Evaluation([MessageAnswer("", "AR", ack, [str(exc)], submission.id, submission.verdict,
                                             submission.reasons)], [submission], [*aggregates, submission])
        answers: list[MessageAnswer] = []
        submissions: list[Submission] = []
        visits: dict[UUID, VisitCredits] = {}
        for combined in hl7files.combined_files(messages):
            submission = self._evaluate_file(combined, sha256, received_at, channel, hie_submission_id,
                                             participant_hint, visits, aggregates)
            submissions.append(submission)
            for message in combined.messages:
                code = "AR" if message.fatal or "unknown_sending_facility" in submission.reasons else (
                    "AE" if message.problems else "AA")
                problems = [message.fatal] if message.fatal else (
                    ["unknown sending facility (MSH-4)"] if code == "AR" else message.problems)
                answers.append(MessageAnswer(message.control_id, code,
                                             build_ack(code, message.control_id, message.trigger, message.sending_facility,
                                                       problems), problems, submission.id, submission.verdict,
                                             submission.reasons))
        return Evaluation(answers, submissions, [*aggregates, *submissions, *visits.values()])

    def _evaluate_file(self, combined: hl7files.CombinedFile, sha256: str, received_at: datetime, channel: str,
                       hie_submission_id: str | None, participant_hint: UUID | None,
                       visits: dict[UUID, VisitCredits], aggregates: list[Aggregate]) -> Submission:
        first = combined.adt or combined.messages[0]
        participant_id = participant_hint or self.participant_for_facility(first.sending_facility_ids)
        adt = combined.adt
        facts = {
            "messages": [{"type": m.kind, "control_id": m.control_id, "sending_facility": m.sending_facility,
                          "version": m.version} for m in combined.messages],
            "event_type": adt.trigger if adt else None,
            "event_time": adt.event_time.isoformat() if adt and adt.event_time else None,
            "event_time_source": adt.event_time_source if adt else None,
            "member_id": adt.cin if adt else first.cin,
            "visit": adt.visit if adt else first.visit,
            "facility": adt.facility if adt else first.facility,
        }
        submission = Submission(channel, received_at, HL7_TYPE, sha256, hie_submission_id, participant_id, facts)
        fatal = sorted({m.fatal for m in combined.messages if m.fatal})
        if fatal:
            submission.reject([f"unprocessable:{f}" for f in fatal])
            return submission
        if participant_id is None:
            submission.reject(["unknown_sending_facility"])
            return submission
        if adt is None:
            submission.record(["no_qualifying_event"])
            return submission
        participant = self.participant_facts(participant_id)
        if adt.trigger in hl7files.CANCELS:
            self._cancel(submission, adt, participant_id, visits, aggregates)
            return submission
        if adt.trigger not in hl7files.QUALIFYING:
            submission.record([f"not_a_qualifying_event:{adt.trigger}"])
            return submission
        if participant is not None and participant.earning_rule != SNF_RULE and participant.provider_type:
            rule = participant.earning_rule
            submission.record(["earning_rule_forthcoming" if rule is None else f"earning_rule_does_not_credit_adt:{rule}"])
            return submission
        member = self.member_facts(adt.cin) if adt.cin else None
        reasons = snf_file_reasons(problems=combined.problems(), event_time=adt.event_time, received_at=received_at,
                                   member=member, participant=participant)
        if reasons:
            submission.reject(reasons)
            return submission
        assert adt.event_time is not None and adt.cin is not None and adt.visit is not None and participant is not None
        visit = self._visit(participant_id, member.cin if member else adt.cin, adt.visit, visits)
        event_key = f"{adt.trigger}|{adt.event_time.astimezone(PLAN_ZONE).isoformat()}"
        earlier = visit.credited(event_key)
        if earlier is not None:
            submission.reject([f"duplicate_of:{earlier['submission_id']}"])
            return submission
        submission.credit_event(participant_id=participant_id, member_id=visit.member_id,
                                amount=SNF_FILE_AMOUNT, rule_version=participant.rule_version or "", earning_rule=SNF_RULE,
                                event_key=event_key, quarter=quarter_of(received_at),
                                captured_on=adt.event_time.astimezone(PLAN_ZONE).date(), attributed=None)
        visit.add(event_key=event_key, event_type=adt.trigger, submission_id=submission.id)
        return submission

    def _visit(self, participant_id: UUID, cin: str, visit: str, visits: dict[UUID, VisitCredits]) -> VisitCredits:
        visit_id = VisitCredits.create_id(participant_id, cin, visit)
        if visit_id not in visits:
            visits[visit_id] = self._get(visit_id) or VisitCredits(participant_id, cin, visit)
        return visits[visit_id]

    def _cancel(self, submission: Submission, adt: hl7files.Message, participant_id: UUID,
                visits: dict[UUID, VisitCredits], aggregates: list[Aggregate]) -> None:
        cancelled_type = hl7files.CANCELS[adt.trigger]
        member = self.member_facts(adt.cin) if adt.cin else None
        if adt.cin is None or adt.visit is None:
            submission.reject([f"incomplete:{p}" for p in adt.problems] or ["incomplete:PID-3/PV1-19"])
            return
        visit = self._visit(participant_id, member.cin if member else adt.cin, adt.visit, visits)
        credit = visit.latest_active(cancelled_type)
        if credit is None:
            submission.record([f"cancels_nothing_credited:{cancelled_type}"])
            return
        original = self.submission(credit["submission_id"])
        original.reverse(participant_id=participant_id, cancelled_by=submission.id, amount=original.amount,
                         quarter=original.credit["quarter"] if original.credit else quarter_of(submission.received_at))
        visit.withdraw(event_key=credit["event_key"], cancelled_by=submission.id)
        submission.record([f"cancels:{original.id}"])
        aggregates.append(original)

    def receive_hl7(self, data: bytes, received_at: datetime, channel: str, hie_submission_id: str | None = None,
                    participant_hint: UUID | None = None) -> Evaluation:
        for attempt in range(5):
            evaluation = self.evaluate_hl7(data, received_at, channel, hie_submission_id, participant_hint)
            try:
                self.save(*evaluation.aggregates)
                return evaluation
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    # -- longitudinal records (primary care) -------------------------------------------------------------------
    def evaluate_record(self, data: bytes, content_type: str, received_at: datetime, channel: str,
                        participant_id: UUID | None, sending_facility: str | None = None,
                        hie_submission_id: str | None = None) -> Evaluation:
        sha256 = self._store_payload(data, content_type)
        text = _decode(data) or ""
        facts = longitudinal.ccda_ccd(text) if content_type == CDA_TYPE or text.lstrip().startswith("<") \
            else longitudinal.fhir_bundle(text)
        participant_id = participant_id or (self.participant_for_facility((sending_facility,)) if sending_facility else None)
        submission = Submission(channel, received_at, content_type, sha256, hie_submission_id, participant_id,
                                {"kind": facts.kind, "member_id": facts.cin, "resource_types": facts.resource_types})
        received_on = received_at.astimezone(PLAN_ZONE).date()
        participant = self.participant_facts(participant_id) if participant_id else None
        member = self.member_facts(facts.cin) if facts.cin else None
        if participant_id is None:
            submission.reject(["unknown_participant"])
        elif facts.problems:
            submission.reject([f"incomplete:{p}" for p in facts.problems])
        elif participant is not None and participant.provider_type and participant.earning_rule != PCP_RULE:
            rule = participant.earning_rule
            submission.record(["earning_rule_forthcoming" if rule is None else f"earning_rule_does_not_credit_records:{rule}"])
        else:
            reasons = ([] if member is not None and member.member_on(received_on) else ["not_a_member"]) + \
                participant_reasons(participant, received_on)
            if reasons:
                submission.reject(reasons)
            else:
                assert participant is not None and facts.cin is not None and member is not None
                refs = {str(participant_id), *(filter(None, [participant.npi]))}
                submission.credit_event(participant_id=participant_id, member_id=member.cin, amount=ZERO,
                                        rule_version=participant.rule_version or "", earning_rule=PCP_RULE,
                                        event_key=f"record|{member.cin}|{quarter_of(received_at)}",
                                        quarter=quarter_of(received_at), captured_on=received_on,
                                        attributed=member.attributed_to(refs, received_on))
        return Evaluation([], [submission], [submission])

    def receive_record(self, data: bytes, content_type: str, received_at: datetime, channel: str,
                       participant_id: UUID | None, sending_facility: str | None = None) -> Evaluation:
        evaluation = self.evaluate_record(data, content_type, received_at, channel, participant_id, sending_facility)
        self.save(*evaluation.aggregates)  # a record's submission is a new aggregate: nothing to conflict with
        return evaluation


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        head = data[:512]
        if b"8859/1" in head or b"8859-1" in head:  # MSH-18 declares Latin-1
            return data.decode("latin-1")
        return None


