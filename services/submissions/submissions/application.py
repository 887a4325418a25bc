"""The submissions Application: payloads in, Submissions with verdicts out (DOMAIN.md A3).

`evaluate_*` decide and return the aggregates to save (so a NATS consumer can save them with its tracking
record); `receive_*` also save them, re-deciding on an optimistic-concurrency conflict (two copies of one event
racing: exactly one credits, the other becomes `duplicate_of`). `receive_hl7_group` judges several files in order
and saves them in one transaction (the MLLP group commit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from dsi_shared.blobs import Blob, BlobStore
from dsi_shared.cipher import PayloadCipher, sha256_of
from dsi_shared.config import hie_max_delay
from dsi_shared.errors import NotFound
from dsi_shared.members import cin_of
from dsi_shared.occ import retry_on_conflict
from dsi_shared.plantime import plan_day
from dsi_shared.rulebook import RuleBook, RulesCopy, RulesReader
from dsi_shared.store import Collecting, ServiceApplication, stamp_trace
from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate
from opentelemetry import context as otel_context

from submissions import hl7files, longitudinal
from submissions.ack import Reply, ack_for
from submissions.domain import (
    CREDITED,
    NOT_A_MEMBER,
    REJECTED,
    ZERO,
    CinAliasFacts,
    FacilityIndex,
    HeldFiles,
    Judgment,
    MemberFacts,
    ParticipantFacts,
    Submission,
    VisitCredits,
    cancelled_event,
    judge_record,
    judge_snf_file,
    may_change,
    resolve_member,
)

HL7_TYPE, FHIR_TYPE, CDA_TYPE = "x-application/hl7-v2+er7", "application/fhir+json", "application/cda+xml"
SENDER_NOT_BOUND = "sender_not_bound_to_token"  # the file names a sender its token may not submit for (AR, 204)
NOT_BOUND_PROBLEM = "MSH-4 sending facility not bound to this sender"
CLOCK_SKEW = timedelta(minutes=5)  # a stated receipt this far after our clock is the sender's clock running fast
log = logging.getLogger(__name__)


def stated_receipt_problem(received_at: datetime, now: datetime) -> str | None:
    """Why a receipt time stated by a sender (not our clock) may not stand, or None: it may be earlier than `now` by
    at most `DSI_HIE_MAX_DELAY_HOURS`, and not later than `now` (beyond `CLOCK_SKEW`)."""
    if received_at > now + CLOCK_SKEW:
        return "received_at is in the future of the server's clock"
    delay = hie_max_delay()
    if received_at < now - delay:
        return (f"received_at is more than {delay.total_seconds() / 3600:g} hours (DSI_HIE_MAX_DELAY_HOURS) before "
                "the server's clock")
    return None


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
    reply: Reply = field(default_factory=Reply)  # how the sender asked to be answered (MLLP enhanced mode)


@dataclass
class Evaluation:
    answers: list[MessageAnswer]
    submissions: list[Submission]
    aggregates: list[Aggregate]


@dataclass(frozen=True)
class HL7Receipt:
    """One HL7 file as received (`receive_hl7`'s arguments), with the trace context it arrived in."""

    data: bytes
    received_at: datetime
    channel: str
    senders: frozenset[str] | None = None
    origin: dict[str, Any] | None = None
    trace: otel_context.Context | None = None
    payload: hl7files.Payload | None = None  # `data` as already read (`hl7files.read_payload`), else read when judged


@dataclass
class _Group:
    """A group of files judged together: every aggregate as the group has it (loaded or changed by an earlier file;
    None: not in the store), the rules read once, and the payloads to keep in one transaction."""

    aggregates: dict[UUID, Any] = field(default_factory=dict)
    book: RuleBook | None = None
    blobs: dict[str, Blob] = field(default_factory=dict)


@dataclass
class JudgedGroup:
    """Files judged together, their events taken for one commit (`commit_hl7_group`)."""

    receipts: list[HL7Receipt]
    evaluations: list[Evaluation]
    state: _Group
    processing: ProcessingEvent[UUID]


_GROUP: ContextVar[_Group | None] = ContextVar("submissions_group", default=None)  # per thread: never shared


@contextmanager
def _traced(trace: otel_context.Context | None) -> Iterator[None]:
    """Run in the trace context a file arrived in (its spans and events belong to its own trace)."""
    token = otel_context.attach(trace) if trace is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


class Submissions(ServiceApplication):
    name = "submissions"

    def __init__(self, store_url: str, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(store_url, extra_env)
        self.rules = RulesReader()
        self._cipher: PayloadCipher | None = None
        self.blobs = BlobStore(self)

    @property
    def cipher(self) -> PayloadCipher:
        if self._cipher is None:
            self._cipher = PayloadCipher()
        return self._cipher

    # -- lookups ----------------------------------------------------------------------------------------------
    def _get(self, aggregate_id: UUID) -> Any:
        group = _GROUP.get()
        if group is not None and aggregate_id in group.aggregates:  # as the earlier files of the group left it
            return group.aggregates[aggregate_id]
        try:
            found: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            found = None
        if group is not None:
            group.aggregates[aggregate_id] = found
        return found

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
        """The member enrollment published under this CIN, or under the CIN a frozen one now points to."""
        return resolve_member(cin, self._get)

    def member_of(self, submission: Submission) -> MemberFacts | None:
        cin = submission.facts.get("member_id")
        return self.member_facts(cin) if cin else None

    def current_cin(self, cin: str | None) -> str | None:
        """The CIN a frozen one now points to (itself when it is not frozen, or not known to be)."""
        alias: CinAliasFacts | None = self._get(CinAliasFacts.create_id(cin)) if cin else None
        return alias.current_cin if alias is not None else cin

    def member_record(self, cin: str) -> MemberFacts:
        """This CIN's own aggregate, to change: what enrollment published of it, or only what waits on it, or new."""
        found: MemberFacts | None = self._get(MemberFacts.create_id(cin))
        return found or MemberFacts(cin)

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
        blob = Blob(sha256, len(data), content_type, self.cipher.key_id, self.cipher.encrypt(data, sha256))
        group = _GROUP.get()
        if group is not None:  # kept with the group's payloads, before its events are saved
            group.blobs.setdefault(sha256, blob)
        else:
            self.blobs.put(blob)
        return sha256

    # -- HL7 v2 (skilled nursing) ---------------------------------------------------------------------------------
    def evaluate_hl7(self, data: bytes, received_at: datetime, channel: str, hie_submission_id: str | None = None,
                     participant_hint: UUID | None = None, senders: frozenset[str] | None = None,
                     origin: dict[str, Any] | None = None, payload: hl7files.Payload | None = None) -> Evaluation:
        """`senders`: the facilities, NPIs and participant ids the submitter may submit for (None: any); a file
        naming another is rejected `sender_not_bound_to_token` and answered AR (204). `origin`: who submitted and
        how (kept in each submission's facts). `payload`: `data` as the caller already read it."""
        aggregates: list[Aggregate] = []
        sha256 = self._store_payload(data, HL7_TYPE)
        # never fails: bytes not in the declared set are read as Windows-1252
        payload = payload if payload is not None else hl7files.read_payload(data)
        decoded, texts, leniencies = payload.decoded, payload.messages, payload.leniencies
        if payload.unreadable is not None:  # no readable MSH: AR, with MSH-10 when one can still be read
            control_id = hl7files.control_id_of(decoded.text)
            problem = payload.unreadable
            submission = Submission(channel, received_at, HL7_TYPE, sha256, hie_submission_id, participant_hint,
                                    {"messages": [], **(origin or {})})
            submission.reject(["not_hl7"])
            reply = Reply(codec=decoded.codec)
            return Evaluation([MessageAnswer(control_id, "AR", ack_for(reply, "AR", control_id, [problem]), [problem],
                                             submission.id, submission.verdict, submission.reasons, reply)],
                              [submission], [*aggregates, submission])
        messages = [hl7files.parse_message(i, m) for i, m in enumerate(texts)]
        read_as = {"encoding": decoded.codec} if decoded.codec != "utf-8" else {}
        answers: list[MessageAnswer] = []
        submissions: list[Submission] = []
        visits: dict[UUID, VisitCredits] = {}
        for combined in hl7files.combined_files(messages):
            submission = self._evaluate_file(combined, sha256, received_at, channel, hie_submission_id,
                                             participant_hint, visits, aggregates, senders,
                                             {**read_as, **(origin or {})}, [*decoded.leniencies, *leniencies])
            submissions.append(submission)
            answers.extend(self._answer(message, submission, decoded.codec) for message in combined.messages)
        self._keep_if_held(submissions, aggregates)
        return Evaluation(answers, submissions, [*aggregates, *submissions, *visits.values()])

    @staticmethod
    def _answer(message: hl7files.Message, submission: Submission, codec: str) -> MessageAnswer:
        """One message's ACK: AR (204) for a sender not bound or unknown, AR for what cannot be processed, AE naming
        each problem, else AA; what was read leniently as ERR warnings. MSA-2 is its MSH-10 whatever the code."""
        if SENDER_NOT_BOUND in submission.reasons:
            code, problems = "AR", [NOT_BOUND_PROBLEM]
        elif message.fatal:
            code, problems = "AR", [message.fatal]
        elif "unknown_sending_facility" in submission.reasons:
            code, problems = "AR", ["unknown sending facility (MSH-4)"]
        else:
            code, problems = ("AE" if message.problems else "AA"), list(message.problems)
        reply = Reply(message.trigger, message.sending_facility, message.version, message.charset, codec,
                      message.accept_ack, message.application_ack)
        ack = ack_for(reply, code, message.control_id, problems, message.warnings)
        return MessageAnswer(message.control_id, code, ack, problems, submission.id, submission.verdict,
                             submission.reasons, reply)

    def rulebook(self) -> RuleBook:
        group = _GROUP.get()
        if group is None:
            return self.rules.book(self)
        if group.book is None:
            rules_id = RulesCopy.create_id()
            group.book = (self.rules.book_of(group.aggregates[rules_id]) if rules_id in group.aggregates
                          else self.rules.book(self))
        return group.book

    def _evaluate_file(self, combined: hl7files.CombinedFile, sha256: str, received_at: datetime, channel: str,
                       hie_submission_id: str | None, participant_hint: UUID | None,
                       visits: dict[UUID, VisitCredits], aggregates: list[Aggregate],
                       senders: frozenset[str] | None = None, origin: dict[str, Any] | None = None,
                       leniencies: list[str] | None = None) -> Submission:
        first = combined.adt or combined.messages[0]
        participant_id = participant_hint or self.participant_for_facility(first.sending_facility_ids)
        adt = combined.adt
        facts: dict[str, Any] = {
            "messages": combined.message_facts(),
            "event_type": adt.trigger if adt else None,
            "event_time": adt.event_time.isoformat() if adt and adt.event_time else None,
            "event_time_source": adt.event_time_source if adt else None,
            "member_id": adt.cin if adt else first.cin,
            "visit": adt.visit if adt else first.visit,
            "visit_source": adt.visit_source if adt else first.visit_source,
            "facility": adt.facility if adt else first.facility,
            **(origin or {}),
        }
        # every leniency, so an auditor sees what was read anyway: the payload's, then each message's (by MSH-10)
        read_anyway = [*(leniencies or []), *(f"{m.kind} MSH-10 {m.control_id}: {w}"
                                               for m in combined.messages for w in m.warnings)]
        if read_anyway:
            facts["leniencies"] = read_anyway
        submission = Submission(channel, received_at, HL7_TYPE, sha256, hie_submission_id, participant_id, facts)
        if senders is not None and not all(
                self._bound(senders, m.sending_facility_ids, self.participant_for_facility(m.sending_facility_ids))
                for m in combined.messages):
            submission.reject([SENDER_NOT_BOUND])
            return submission
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
        book = self.rulebook()
        cancelled = cancelled_event(book, participant, adt.trigger, plan_day(adt.event_time or received_at))
        if cancelled is not None:
            self._cancel(submission, adt, cancelled, participant_id, visits, aggregates, book)
            return submission
        facts["rejudgeable"] = True  # judged from these facts alone: a later fact can judge it again
        self._judge_file(submission, participant, book, visits, self.member_of(submission))
        return submission

    def _judge_file(self, submission: Submission, participant: ParticipantFacts | None, book: RuleBook,
                    visits: dict[UUID, VisitCredits], member: MemberFacts | None, cause: str | None = None) -> bool:
        """Judge a combined file from its facts and its member (at receipt, or again when `cause` changed a fact).
        True when the submission changed."""
        facts = submission.facts
        event_time = submission.event_time
        judgment = judge_snf_file(event_type=facts["event_type"], event_time=event_time,
                                  received_at=submission.received_at, messages=facts["messages"], member=member,
                                  participant=participant, book=book)
        if judgment.verdict == CREDITED:
            assert event_time is not None and participant is not None and submission.participant_id is not None
            visit = self._visit(submission.participant_id, member.cin if member else facts["member_id"],
                                facts["visit"] or "", visits)  # no visit id: the patient's events
            event_key = submission.event_key
            assert event_key is not None
            earlier = visit.credited(event_key)
            if earlier is not None:
                judgment = Judgment(REJECTED, [f"duplicate_of:{earlier['submission_id']}"], judgment.rule_version)
            else:
                if cause is not None:
                    submission.rejudge(verdict=CREDITED, reasons=[], rule_version=judgment.rule_version, cause=cause)
                submission.credit_event(participant_id=submission.participant_id, member_id=visit.member_id,
                                        amount=judgment.amount, rule_version=judgment.rule_version or "",
                                        earning_rule=judgment.earning_rule or "", event_key=event_key,
                                        quarter=str(book.calendar.quarter_at(submission.received_at)),
                                        captured_on=plan_day(event_time),
                                        attributed=None)
                visit.add(event_key=event_key, event_type=facts["event_type"], submission_id=submission.id)
                return True
        return self._conclude(submission, judgment, cause)

    def _conclude(self, submission: Submission, judgment: Judgment, cause: str | None) -> bool:
        if cause is not None:
            if (judgment.verdict, judgment.reasons) == (submission.verdict, submission.reasons):
                return False
            submission.rejudge(verdict=judgment.verdict, reasons=judgment.reasons, rule_version=judgment.rule_version,
                               cause=cause)
        elif judgment.verdict == REJECTED:
            submission.reject(judgment.reasons)
        else:
            submission.record(judgment.reasons)
        return True

    def _visit(self, participant_id: UUID, cin: str, visit: str, visits: dict[UUID, VisitCredits]) -> VisitCredits:
        visit_id = VisitCredits.create_id(participant_id, cin, visit)
        if visit_id not in visits:
            visits[visit_id] = self._get(visit_id) or VisitCredits(participant_id, cin, visit)
        return visits[visit_id]

    def _cancel(self, submission: Submission, adt: hl7files.Message, cancelled_type: str, participant_id: UUID,
                visits: dict[UUID, VisitCredits], aggregates: list[Aggregate], book: RuleBook) -> None:
        member = self.member_facts(adt.cin) if adt.cin else None
        if adt.cin is None:
            submission.reject([f"incomplete:{p}" for p in adt.problems] or ["incomplete:PID-3"])
            return
        visit = self._visit(participant_id, member.cin if member else adt.cin, adt.visit or "", visits)
        credit = visit.latest_active(cancelled_type)
        if credit is None:
            submission.record([f"cancels_nothing_credited:{cancelled_type}"])
            return
        original = self.submission(credit["submission_id"])
        original.reverse(participant_id=participant_id, cancelled_by=submission.id, amount=original.amount,
                         quarter=original.credit["quarter"] if original.credit
                         else str(book.calendar.quarter_at(submission.received_at)))
        visit.withdraw(event_key=credit["event_key"], cancelled_by=submission.id)
        submission.record([f"cancels:{original.id}"])
        aggregates.append(original)

    def _bound(self, senders: frozenset[str], facility_ids: tuple[str, ...], participant_id: UUID | None) -> bool:
        """A sender is in `senders` when its facility ids are listed, or it resolves to a participant whose id or NPI
        is listed."""
        identifiers = set(facility_ids)
        if participant_id is not None:
            facts = self.participant_facts(participant_id)
            identifiers |= {str(participant_id), *filter(None, [facts.npi if facts else None])}
        return bool(senders & identifiers)

    def receive_hl7(self, data: bytes, received_at: datetime, channel: str, hie_submission_id: str | None = None,
                    participant_hint: UUID | None = None, senders: frozenset[str] | None = None,
                    origin: dict[str, Any] | None = None, payload: hl7files.Payload | None = None) -> Evaluation:
        def attempt() -> Evaluation:
            evaluation = self.evaluate_hl7(data, received_at, channel, hie_submission_id, participant_hint, senders,
                                           origin, payload)
            self.save(*evaluation.aggregates)
            return evaluation

        return retry_on_conflict(attempt, "the participant's files")

    def receive_hl7_group(self, receipts: Sequence[HL7Receipt]) -> list[Evaluation | Exception]:
        """Receive several files as if one by one, in order, but with one commit for all (the MLLP group commit: one
        fsync serves many files): `judge_hl7_group`, then `commit_hl7_group`. When any file cannot be judged or the
        transaction fails (a concurrent change, anything), each file is received alone instead (`receive_each`), so
        one bad file never costs the others their verdict. Returns each file's evaluation, or the error that kept it
        from being recorded."""
        try:
            judged = self.judge_hl7_group(receipts)
            self.commit_hl7_group(judged)
        except Exception as exc:  # noqa: BLE001 - nothing was saved: each file alone decides its own outcome
            log.warning("group of %d files not committed together (%s): received one by one",
                        len(receipts), type(exc).__name__)  # the type only: messages may hold PHI
            return self.receive_each(receipts)
        return list(judged.evaluations)

    def receive_each(self, receipts: Sequence[HL7Receipt]) -> list[Evaluation | Exception]:
        """Each file received alone, in order (its own transaction, re-decided on a conflict); an error is returned
        in its place, never raised, so that it concerns that file only."""
        return [self._receive_alone(receipt) for receipt in receipts]

    def _receive_alone(self, receipt: HL7Receipt) -> Evaluation | Exception:
        with _traced(receipt.trace):
            try:
                return self.receive_hl7(receipt.data, receipt.received_at, receipt.channel, senders=receipt.senders,
                                        origin=receipt.origin, payload=receipt.payload)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which answers for this file only
                return exc

    def judge_hl7_group(self, receipts: Sequence[HL7Receipt], after: JudgedGroup | None = None) -> JudgedGroup:
        """Judge the files in order, each against the store plus the earlier files' changes (a copy of an earlier
        file is its `duplicate_of`, a cancel withdraws its credit), and take their new events for one commit.
        `after`: a group judged before and not committed yet: this one starts from the aggregates that group changed
        (it is committed only after it, and received file by file should that commit fail). Raises what kept a file
        from being judged."""
        # from `after` only what it changed (not recorded yet); anything else is read from the store, as fresh as now
        group = _Group(aggregates=dict(after.processing.aggregates) if after is not None else {})
        self._prefetch(group, receipts)
        evaluations: list[Evaluation] = []
        token = _GROUP.set(group)
        try:
            for receipt in receipts:
                with _traced(receipt.trace):
                    evaluation = self.evaluate_hl7(receipt.data, receipt.received_at, receipt.channel,
                                                   senders=receipt.senders, origin=receipt.origin,
                                                   payload=receipt.payload)
                    stamp_trace(evaluation.aggregates)  # its events keep its own trace, whoever commits them
                group.aggregates.update((aggregate.id, aggregate) for aggregate in evaluation.aggregates)
                evaluations.append(evaluation)
        finally:
            _GROUP.reset(token)
        changed = {aggregate.id: aggregate for evaluation in evaluations for aggregate in evaluation.aggregates}
        processing = Collecting()  # by class, not by runtime Protocol checks
        processing.collect_events(*changed.values())  # taken now: the next group may go on changing them
        return JudgedGroup(list(receipts), evaluations, group, processing)

    def _prefetch(self, group: _Group, receipts: Sequence[HL7Receipt]) -> None:
        """Load in two queries what judging the files will likely read (the rules copy; their senders' facility index,
        participant facts and held files; their members; their visits), instead of a query per file and aggregate. Only a
        speed-up: ids are guessed from the raw text (`_likely_ids`), a wrong guess is just read later, and whatever is
        loaded is the store as it stands now, as a read during judging would see it."""
        facilities, cins, visits = _likely_ids(receipts)
        first = [RulesCopy.create_id(), *(FacilityIndex.create_id(f) for f in facilities),
                 *(MemberFacts.create_id(c) for c in cins)]
        found = self._load_into(group, first)
        participants = {i.participant_id for i in found if isinstance(i, FacilityIndex)}
        self._load_into(group, [*(ParticipantFacts.create_id(p) for p in participants),
                                *(HeldFiles.create_id(p) for p in participants),
                                *(VisitCredits.create_id(p, c, v) for p in participants for c, v in visits)])

    def _load_into(self, group: _Group, ids: list[UUID]) -> list[Any]:
        wanted = [i for i in dict.fromkeys(ids) if i not in group.aggregates]
        found = self.get_many(wanted)
        group.aggregates.update((i, found.get(i)) for i in wanted)
        return list(found.values())

    def commit_hl7_group(self, judged: JudgedGroup) -> None:
        """Keep the group's payloads (one transaction), then record all its events (one more). Raises when the
        events were not recorded. The payloads' commit does not wait for its own flush to disk: the events' commit,
        later in the same write-ahead log, flushes it too before the files are answered (one fsync a group)."""
        self.blobs.put_many(list(judged.state.blobs.values()), flushed_by_next_commit=True)
        with _traced(judged.receipts[0].trace if judged.receipts else None):
            recordings = self._record(judged.processing)
        try:  # recorded: what follows must not make the caller think otherwise
            self._take_snapshots(judged.processing)
            self._notify(recordings)
        except Exception as exc:  # noqa: BLE001
            log.error("group of files recorded, listeners not told: %s", type(exc).__name__)

    # -- longitudinal records (primary care) -------------------------------------------------------------------
    def evaluate_record(self, data: bytes, content_type: str, received_at: datetime, channel: str,
                        participant_id: UUID | None, sending_facility: str | None = None,
                        hie_submission_id: str | None = None, senders: frozenset[str] | None = None,
                        origin: dict[str, Any] | None = None) -> Evaluation:
        sha256 = self._store_payload(data, content_type)
        text = _decode(data) or ""
        facts = longitudinal.ccda_ccd(text) if content_type == CDA_TYPE or text.lstrip().startswith("<") \
            else longitudinal.fhir_bundle(text)
        named = (sending_facility,) if sending_facility and participant_id is None else ()
        participant_id = participant_id or (self.participant_for_facility(named) if named else None)
        submission = Submission(channel, received_at, content_type, sha256, hie_submission_id, participant_id,
                                {"kind": facts.kind, "member_id": facts.cin, "resource_types": facts.resource_types,
                                 **facts.recorded(), **(origin or {})})
        participant = self.participant_facts(participant_id) if participant_id else None
        if senders is not None and not self._bound(senders, named, participant_id):
            submission.reject([SENDER_NOT_BOUND])
        elif participant_id is None:
            submission.reject(["unknown_participant"])
        else:
            submission.facts["problems"] = list(facts.problems)
            submission.facts["rejudgeable"] = True
            self._judge_record(submission, participant, self.rulebook(), {}, self.member_of(submission))
        aggregates: list[Aggregate] = [submission]
        self._keep_if_held([submission], aggregates)
        return Evaluation([], [submission], aggregates)

    def _judge_record(self, submission: Submission, participant: ParticipantFacts | None, book: RuleBook,
                      visits: dict[UUID, VisitCredits], member: MemberFacts | None, cause: str | None = None) -> bool:
        """Judge a longitudinal record and its member (`visits` unused: records earn per quarter, not per visit;
        the signature is `_judge_file`'s)."""
        judgment = judge_record(problems=submission.facts.get("problems", []), received_at=submission.received_at,
                                member=member, participant=participant, book=book)
        if judgment.verdict != CREDITED:
            return self._conclude(submission, judgment, cause)
        assert participant is not None and member is not None and submission.participant_id is not None
        received_on = plan_day(submission.received_at)
        quarter = book.calendar.quarter_of(received_on)  # "belongs to the quarter in which the HIE received it"
        refs = {str(submission.participant_id), *(filter(None, [participant.npi]))}
        if cause is not None:
            submission.rejudge(verdict=CREDITED, reasons=[], rule_version=judgment.rule_version, cause=cause)
        submission.credit_event(participant_id=submission.participant_id, member_id=member.cin, amount=ZERO,
                                rule_version=judgment.rule_version or "", earning_rule=judgment.earning_rule or "",
                                event_key=f"record|{member.cin}|{quarter}",
                                quarter=str(quarter), captured_on=received_on,
                                attributed=member.attributed_to(refs, received_on))
        return True

    # -- judging again when a fact arrives (DOMAIN.md A4: "Money never depends on the order in which two streams'
    #    messages arrive") ------------------------------------------------------------------------------------------
    def held_files(self, participant_id: UUID) -> HeldFiles:
        found: HeldFiles | None = self._get(HeldFiles.create_id(participant_id))  # in a group: as the group has it
        return found or HeldFiles(participant_id)

    def _keep_if_held(self, submissions: list[Submission], aggregates: list[Aggregate]) -> None:
        """Note each new submission that a later fact could still make earn; one judged `not_a_member` also on its
        member's aggregate, which the eligibility that may come later changes too (the two writes meet there, so
        neither the file nor the eligibility can be recorded without the other being seen)."""
        held: dict[UUID, HeldFiles] = {}
        members: dict[str, MemberFacts] = {}
        for submission in submissions:
            if submission.participant_id is not None and may_change(submission):
                pid = submission.participant_id
                record = held.get(pid) or self.held_files(pid)
                held[pid] = record
                record.hold(submission_id=submission.id)
                cin = self.current_cin(submission.facts.get("member_id")) if NOT_A_MEMBER in submission.reasons else None
                if cin:
                    holder = members.get(cin) or self.member_record(cin)
                    members[cin] = holder
                    holder.wait(submission_id=submission.id)
        aggregates.extend(held.values())
        aggregates.extend(members.values())

    def rejudge(self, cause: str, participant: ParticipantFacts | None = None, book: RuleBook | None = None) -> list[Aggregate]:
        """Judge again the held files and records (all participants', or `participant`'s) under the facts and rules
        known now — `participant` and `book` as just changed, not yet saved. Returns the aggregates that changed,
        to save together with the fact that caused it (and its tracking record)."""
        book = book or self.rulebook()
        visits: dict[UUID, VisitCredits] = {}
        changed: list[Aggregate] = []
        if participant is not None:
            found = self.find(HeldFiles.create_id(participant.participant_id), HeldFiles)
            records = [found] if found is not None else []
        else:
            records = [self.get(i, HeldFiles, "held files") for i in self.ids_created_with(HeldFiles.HeldFilesOpened)]  # type: ignore[attr-defined]
        for record in records:
            facts = participant or self.participant_facts(record.participant_id)
            for submission_id in list(record.held):
                submission = self.submission(submission_id)
                if submission.content_type == HL7_TYPE:
                    now_changed = self._judge_file(submission, facts, book, visits, self.member_of(submission), cause)
                else:
                    now_changed = self._judge_record(submission, facts, book, visits, self.member_of(submission), cause)
                if now_changed:
                    changed.append(submission)
                if not may_change(submission):
                    record.release(submission_id=submission_id)
            if record.pending_events:
                changed.append(record)
        return [*changed, *(v for v in visits.values() if v.pending_events)]

    def rejudge_waiting(self, holder: MemberFacts, member: MemberFacts | None, cause: str) -> list[Aggregate]:
        """Judge again the files and records waiting on `holder`'s CIN, with `member` (the member as just changed,
        not yet saved: the holder itself, or the member a frozen CIN now points to). Returns what changed, to save
        with the fact that caused it."""
        if not holder.waiting:
            return []
        book = self.rulebook()
        visits: dict[UUID, VisitCredits] = {}
        held: dict[UUID, HeldFiles] = {}
        changed: list[Aggregate] = []
        for submission_id in list(holder.waiting):
            submission = self.submission(submission_id)
            if may_change(submission) and NOT_A_MEMBER in submission.reasons:
                assert submission.participant_id is not None
                facts = self.participant_facts(submission.participant_id)
                judge = self._judge_file if submission.content_type == HL7_TYPE else self._judge_record
                if judge(submission, facts, book, visits, member, cause):
                    changed.append(submission)
                if not may_change(submission):
                    pid = submission.participant_id
                    held[pid] = held.get(pid) or self.held_files(pid)
                    if submission_id in held[pid].held:
                        held[pid].release(submission_id=submission_id)
            if NOT_A_MEMBER not in submission.reasons or not may_change(submission):
                holder.stop_waiting(submission_id=submission_id)
        return [*changed, *(h for h in held.values() if h.pending_events), *(v for v in visits.values() if v.pending_events)]

    def receive_record(self, data: bytes, content_type: str, received_at: datetime, channel: str,
                       participant_id: UUID | None, sending_facility: str | None = None,
                       senders: frozenset[str] | None = None, origin: dict[str, Any] | None = None) -> Evaluation:
        def attempt() -> Evaluation:  # the participant's held-files record may be saved concurrently: decide again
            evaluation = self.evaluate_record(data, content_type, received_at, channel, participant_id, sending_facility,
                                              senders=senders, origin=origin)
            self.save(*evaluation.aggregates)
            return evaluation

        return retry_on_conflict(attempt, "the participant's records")


def _likely_ids(receipts: Sequence[HL7Receipt]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """Sending facilities (MSH-4), CIN-shaped patient ids (PID-3) and (CIN, visit) pairs (PV1-19) in the files'
    raw text, for `_prefetch` only: cheap, and allowed to be wrong."""
    facilities: set[str] = set()
    cins: set[str] = set()
    visits: set[tuple[str, str]] = set()
    for receipt in receipts:
        patient: list[str] = []
        segments = ([s for m in receipt.payload.messages for s in m.split("\r")] if receipt.payload is not None
                    else receipt.data.decode("latin-1").replace("\n", "\r").split("\r"))
        for segment in segments:
            fields = segment.split("|")
            if fields[0] == "MSH" and len(fields) > 3:
                facilities.update(c.strip() for c in fields[3].split("^")[:2] if c.strip())
            elif fields[0] == "PID" and len(fields) > 3:
                patient = [c for r in fields[3].split("~") if (c := cin_of(r.split("^")[0]) or "")]
                cins.update(patient)
            elif fields[0] == "PV1" and len(fields) > 19:
                visits.update((c, fields[19].split("^")[0]) for c in patient)
    return facilities, cins, visits


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        head = data[:512]
        if b"8859/1" in head or b"8859-1" in head:  # MSH-18 declares Latin-1
            return data.decode("latin-1")
        return None


