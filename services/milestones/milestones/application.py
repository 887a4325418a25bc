"""The milestones Application: Milestone 1 progress, and quarter closes that evaluate every participant whose data
sharing has started (DOMAIN.md A3, A4) into evaluations that program staff validate or reject."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any
from uuid import UUID

from dsi_shared.errors import NotFound, PermanentError
from dsi_shared.occ import retry_on_conflict
from dsi_shared.plantime import Quarter, QuarterCalendar, plan_day
from dsi_shared.rulebook import CoveragePerPeriod, PerQualifyingFile, RuleBook, RulesReader
from dsi_shared.store import A, FastRepository, ServiceApplication
from dsi_shared.telemetry import link_to, tracer
from eventsourcing.application import ProcessingEvent, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError
from opentelemetry.trace import Link

from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.earning import COVERAGE, PER_FILE, ZERO, PcpOutcome, pcp_quarter, snf_quarter
from milestones.ledger import (
    PENDING,
    REJECTED,
    VALIDATED,
    AttributionRoster,
    CloseCalendar,
    CreditLedger,
    Evaluation,
    MemberAttribution,
)
from milestones.snapshots import SNAPSHOTTED, Snapshots

TRACER = tracer("milestones")

CLOSE_BLOCK = 50  # participants evaluated before one save: fewer commits, a small redo when one conflicts


class QuarterNotClosable(PermanentError):
    pass


class DecisionConflict(PermanentError):
    pass


class Milestones(ServiceApplication):
    name = "milestones"
    is_snapshotting_enabled = True  # rosters and ledgers (milestones.snapshots); IS_SNAPSHOTTING_ENABLED=n: none
    snapshotted: Snapshots | None  # set with the repository; None when snapshots are off

    def __init__(self, store_url: str, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(store_url, extra_env)
        self.rules = RulesReader()

    # -- snapshots of rosters and ledgers (milestones.snapshots) ---------------------------------------------
    def construct_repository(self) -> Repository[UUID]:
        # Only rosters and ledgers have snapshots: loading anything else never asks the snapshot store.
        repository = FastRepository(event_store=self.events)
        self.snapshotted = Snapshots(self.events, self.snapshots, repository) if self.snapshots is not None else None
        return repository

    def find(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        if self.snapshotted is None or not issubclass(kind, SNAPSHOTTED):
            return super().find(aggregate_id, kind)
        found = self.snapshotted.load(aggregate_id)
        if found is None or isinstance(found, kind):
            return found
        raise TypeError(f"{aggregate_id} is a {type(found).__name__}, not a {kind.__name__}")

    def _record(self, processing_event: ProcessingEvent[UUID]) -> Any:
        """Every path that records (a command's save, the consumer's tracked saves) snapshots what grew enough."""
        recordings = super()._record(processing_event)
        if self.snapshotted is not None:
            self.snapshotted.take_after(processing_event)
        return recordings

    def progress(self, participant_id: UUID) -> ParticipantProgress:
        found = self.find(ParticipantProgress.create_id(participant_id), ParticipantProgress)
        if found is None:
            raise NotFound("no milestones recorded for this participant")
        return found

    def progress_or_new(self, participant_id: UUID) -> ParticipantProgress:
        return self.find(ParticipantProgress.create_id(participant_id), ParticipantProgress) \
            or ParticipantProgress(participant_id)

    def ledger_or_new(self, participant_id: UUID) -> CreditLedger:
        return self.find(CreditLedger.create_id(participant_id), CreditLedger) or CreditLedger(participant_id)

    def member_attribution_or_new(self, cin: str) -> MemberAttribution:
        return self.find(MemberAttribution.create_id(cin), MemberAttribution) or MemberAttribution(cin)

    def roster(self, assignee: str) -> AttributionRoster | None:
        return self.find(AttributionRoster.create_id(assignee), AttributionRoster)

    def calendar(self) -> CloseCalendar:
        return self.find(CloseCalendar.create_id(), CloseCalendar) or CloseCalendar()

    def evaluation(self, evaluation_id: UUID) -> Evaluation:
        return self.get(evaluation_id, Evaluation, "evaluation")

    def all_progress(self) -> Iterator[ParticipantProgress]:
        for progress_id in self.ids_created_with(ParticipantProgress.ProgressStarted):  # type: ignore[attr-defined]
            found = self.find(progress_id, ParticipantProgress)
            if found is not None:
                yield found

    def evaluations(self, quarter: str | None = None, participant_id: UUID | None = None,
                    state: str | None = None) -> list[Evaluation]:
        found = [e for e in (self.evaluation(i) for i in self.ids_created_with(Evaluation.EvaluationRecorded))  # type: ignore[attr-defined]
                 if (quarter is None or e.quarter == quarter) and (participant_id is None or e.participant_id == participant_id)
                 and (state is None or e.state == state)]
        return found

    # -- quarter close ---------------------------------------------------------------------------------------
    def close_quarter(self, text: str, closed_by: str, now: datetime) -> dict[str, Any]:
        """Evaluate every participant for the quarter once. Closing again changes nothing; a close interrupted
        half-way resumes (evaluations have deterministic ids); quarters close in order, and only once ended."""
        quarter = Quarter.parse(text)
        closes = self.calendar()
        if str(quarter) in closes.closed:
            return self.close_summary(quarter, already_closed=True)
        latest = closes.latest
        if latest is not None and quarter < latest:
            raise QuarterNotClosable(f"{latest} is already closed: quarters close in order")
        book = self.rulebook()  # one book for the whole close: every participant under the same versions
        ends = book.calendar.last_day(quarter)  # NoRulesYet (503) before any rules arrived: no calendar to close by
        if ends >= plan_day(now):
            raise QuarterNotClosable(f"{quarter} has not ended yet (it ends {ends})")
        evaluations: list[Evaluation] = []
        participants = 0
        everyone, known = self.participants_and_evaluations()
        # Three blocks at a time: one saved, the next evaluated, the one after read (one save at a time, in order),
        # so that the waits for the store (the disk at each commit, the reads) overlap the evaluating.
        with _cyclic_gc_paused(), ThreadPoolExecutor(1, thread_name_prefix="quarter-close-save") as saver, \
                ThreadPoolExecutor(1, thread_name_prefix="quarter-close-read") as reader:
            in_flight: _BlockSaving | None = None
            reading = reader.submit(copy_context().run, self._read_block, list(islice(everyone, CLOSE_BLOCK)))
            while (read := reading.result()) is not None:
                reading = reader.submit(copy_context().run, self._read_block, list(islice(everyone, CLOSE_BLOCK)))
                block, loaded = read
                made = [self._evaluate_one(progress, quarter, book, known, loaded) for progress in block]
                changed = [aggregate for aggregates in made for aggregate in aggregates]
                saving = _BlockSaving(block, made, saver.submit(copy_context().run, self.save, *changed) if changed
                                      else None)  # the save continues the close's trace
                for done in self._settle_block(in_flight, quarter, book):
                    participants += bool(done)
                    evaluations.extend(done)
                in_flight = saving
            for done in self._settle_block(in_flight, quarter, book):
                participants += bool(done)
                evaluations.extend(done)
        closes.close(quarter=str(quarter), closed_at=now, closed_by=closed_by, evaluations=len(evaluations),
                     participants=participants, earned=sum((e.earned for e in evaluations), ZERO),
                     adjustments=sum(1 for e in evaluations if e.subject != "quarter"))
        try:
            self.save(closes)
        except IntegrityError:  # another close of the same quarter finished first: its result stands
            return self.close_summary(quarter, already_closed=True)
        return self.close_summary(quarter, already_closed=False)

    def close_summary(self, quarter: Quarter, already_closed: bool) -> dict[str, Any]:
        closed = self.calendar().closed.get(str(quarter))
        if closed is None:
            raise NotFound("this quarter is not closed")
        return {"quarter": str(quarter), "already_closed": already_closed, **closed}

    def participants_and_evaluations(self) -> tuple[Iterator[UUID], dict[UUID, Evaluation]]:
        """The ids of every participant's progress, in the order they were created, and every evaluation recorded so
        far, from one pass over their events: the close reads earlier quarters' evaluations of every participant
        (one pass, not a query per participant and quarter), and the log is read once, not once for each."""
        started = ParticipantProgress.ProgressStarted  # type: ignore[attr-defined]
        participants: list[UUID] = []
        evaluations: dict[UUID, Any] = {}
        for domain_event in self.events_of(started, Evaluation.EvaluationRecorded,  # type: ignore[attr-defined]
                                           Evaluation.EvaluationValidated, Evaluation.EvaluationRejected):  # type: ignore[attr-defined]
            if isinstance(domain_event, started):
                participants.append(domain_event.originator_id)
            else:
                evaluations[domain_event.originator_id] = domain_event.mutate(evaluations.get(domain_event.originator_id))
        return iter(participants), evaluations

    def _read_block(self, ids: list[UUID]) -> tuple[list[ParticipantProgress], dict[UUID, Aggregate]] | None:
        """A block of participants' progress (in the order of `ids`) with their ledgers and rosters (`close_facts`),
        each loaded together; None after the last. Its evaluations are saved in one transaction (one commit, not
        one each)."""
        if not ids:
            return None
        found = self.load_many(ids)
        block = [p for i in ids if isinstance(p := found.get(i), ParticipantProgress)]
        return block, self.close_facts(block)

    def _settle_block(self, saving: _BlockSaving | None, quarter: Quarter, book: RuleBook) -> list[list[Evaluation]]:
        """A block's evaluations once its save is done. When one of its participants changed meanwhile (a credit
        arrived), nothing of the block was saved: each is done again on its own, reading the store again."""
        if saving is None:
            return []
        try:
            if saving.saved is not None:
                saving.saved.result()
        except IntegrityError:
            return [self._evaluate_with_retry(progress, quarter, book) for progress in saving.block]
        return [[a for a in aggregates if isinstance(a, Evaluation)] for aggregates in saving.made]

    def _evaluate_with_retry(self, progress: ParticipantProgress, quarter: Quarter, book: RuleBook) -> list[Evaluation]:
        def attempt() -> list[Evaluation]:  # a credit arrived for this participant meanwhile: evaluate again with it
            made = self._evaluate_one(self.progress(progress.participant_id), quarter, book)
            self.save(*made)
            return [a for a in made if isinstance(a, Evaluation)]

        return retry_on_conflict(attempt, "a participant's credits")

    def close_facts(self, block: list[ParticipantProgress]) -> dict[UUID, Aggregate]:
        """The credit ledgers of a block of participants and the rosters naming them, by id, loaded together (a few
        queries for the block, not a few per participant)."""
        ids = [CreditLedger.create_id(p.participant_id) for p in block]
        ids += [AttributionRoster.create_id(reference) for p in block for reference in p.references]
        return self.load_many(ids)

    def load_many(self, aggregate_ids: list[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates among these ids that exist, by id, loaded together (through their snapshots if any)."""
        if self.snapshotted is not None:
            return self.snapshotted.load_many(aggregate_ids)
        return self.get_many(aggregate_ids)

    def _evaluate_one(self, progress: ParticipantProgress, quarter: Quarter, book: RuleBook,
                      known: dict[UUID, Evaluation] | None = None,
                      loaded: Mapping[UUID, Aggregate] | None = None) -> list[Aggregate]:
        """`loaded`: the participant's ledger and rosters when the caller loaded them (`close_facts`): as read then,
        else from the store now."""
        ledger = self.ledger_or_new(progress.participant_id) if loaded is None else \
            _of_kind(loaded.get(CreditLedger.create_id(progress.participant_id)), CreditLedger) \
            or CreditLedger(progress.participant_id)  # loaded once: the links and the evaluation
        with TRACER.start_as_current_span("evaluate participant", links=_credit_links(ledger)) as span:
            span.set_attribute("dsi.participant_id", str(progress.participant_id))
            span.set_attribute("dsi.quarter", str(quarter))
            return self.evaluate(progress, quarter, book, ledger, known, loaded)

    def rulebook(self) -> RuleBook:
        return self.rules.book(self)

    def evaluate(self, progress: ParticipantProgress, quarter: Quarter, book: RuleBook | None = None,
                 ledger: CreditLedger | None = None, known: dict[UUID, Evaluation] | None = None,
                 rosters: Mapping[UUID, Aggregate] | None = None) -> list[Aggregate]:
        """One participant's evaluation(s) for the quarter, and its ledger marked; [] when not due or done. The
        rules are the version in force on the quarter's first day ("the quarter for a quarterly evaluation").
        `ledger`: the participant's, when the caller has just loaded it; `known`: every evaluation recorded
        (`participants_and_evaluations()`), read by the caller (else each evaluation is read from the store);
        `rosters`: the rosters naming the participant, when the caller loaded them (`close_facts`; else each is
        read from the store)."""
        def recorded(evaluation_id: UUID) -> Evaluation | None:
            return known.get(evaluation_id) if known is not None else self.find(evaluation_id, Evaluation)

        pid = progress.participant_id
        book = book or self.rulebook()
        calendar = book.calendar
        first_day, last_day = calendar.first_day(quarter), calendar.last_day(quarter)
        rules = book.in_force(first_day)
        row = rules.provider_type(progress.provider_type) if rules and progress.provider_type else None
        m1 = progress.achieved.get(MILESTONE_1)
        starts = row.data_sharing_starts if row else None
        departed = progress.departure
        if rules is None or m1 is None or plan_day(m1["achieved_at"]) > last_day or starts is None \
                or starts > last_day:
            return []  # not earning yet in this quarter ("A participant's first quarter is the one that holds its
            #            type's data-sharing start date", read from the version in force)
        if departed is not None and departed["effective_on"] <= first_day:
            return []  # left before the quarter
        if recorded(Evaluation.create_id(pid, str(quarter))) is not None:
            return []  # evaluated by an earlier (interrupted) run of this close
        assert row is not None
        rule = row.earning_rule
        ledger = ledger if ledger is not None else self.ledger_or_new(pid)
        if isinstance(rule, PerQualifyingFile):
            return self._evaluate_snf(pid, quarter, rules.version, ledger)
        if isinstance(rule, CoveragePerPeriod):
            return self._evaluate_pcp(progress, quarter, rules.version, rule, ledger, calendar,
                                      calendar.quarter_of(starts), recorded, rosters)
        return [Evaluation(pid, str(quarter), "quarter", None, None, rules.version, ZERO, "earning_rule_forthcoming", {})]

    def _evaluate_snf(self, pid: UUID, quarter: Quarter, rule_version: str, ledger: CreditLedger) -> list[Aggregate]:
        pending = ledger.active(PER_FILE, PENDING)
        new = sorted(s for s, c in pending.items() if c["quarter"] == str(quarter))
        late = sorted(s for s, c in pending.items() if Quarter.parse(c["quarter"]) < quarter)
        recover = ledger.to_recover(PER_FILE)
        result = snf_quarter((pending[s]["amount"] for s in [*new, *late]),
                             (ledger.credits[s]["amount"] for s in recover), ledger.carried)
        figures = {"credits": new, "late_credits": late,
                   "late_quarters": sorted({pending[s]["quarter"] for s in late}),
                   "withdrawn_after_evaluation": recover, "carried_in": str(ledger.carried),
                   "carry_forward": str(result.carry_forward),
                   "credit_amounts": {s: str(pending[s]["amount"]) for s in [*new, *late]},
                   "credit_rule_versions": sorted({str(pending[s]["rule_version"]) for s in [*new, *late]})}
        evaluation = Evaluation(pid, str(quarter), "quarter", f"SNF:{quarter}", PER_FILE, rule_version, result.earned,
                                "earned" if result.earned > ZERO else "nothing_earned", figures)
        ledger.evaluated(evaluation_id=evaluation.id, counted=[*new, *late], recovered=recover,
                         carried=result.carry_forward)
        return [evaluation, ledger]

    def attributed(self, progress: ParticipantProgress, quarter: Quarter, calendar: QuarterCalendar,
                   rosters: Mapping[UUID, Aggregate] | None = None) -> set[str]:
        """The members attributed to the participant in the quarter; `rosters`: as loaded by the caller."""
        members: set[str] = set()
        first, last = calendar.first_day(quarter), calendar.last_day(quarter)  # once: rosters have thousands of spans
        for reference in progress.references:
            roster = self.roster(reference) if rosters is None else \
                _of_kind(rosters.get(AttributionRoster.create_id(reference)), AttributionRoster)
            if roster is not None:
                members |= roster.members_in(first, last)
        return members

    def _met_before(self, pid: UUID, first: Quarter, quarter: Quarter,
                    recorded: Callable[[UUID], Evaluation | None]) -> frozenset[str]:
        """The milestones this participant met in quarters before `quarter` (validated or awaiting validation)."""
        met: set[str] = set()
        earlier = first
        while earlier < quarter:
            found = recorded(Evaluation.create_id(pid, str(earlier)))
            if found is not None and found.milestone and found.earned > ZERO and found.state != REJECTED:
                met.add(found.milestone)
            earlier = earlier.next()
        return frozenset(met)

    def _evaluate_pcp(self, progress: ParticipantProgress, quarter: Quarter, rule_version: str, rule: CoveragePerPeriod,
                      ledger: CreditLedger, calendar: QuarterCalendar, first: Quarter,
                      recorded: Callable[[UUID], Evaluation | None],
                      rosters: Mapping[UUID, Aggregate] | None = None) -> list[Aggregate]:
        pid = progress.participant_id
        made: list[Aggregate] = []
        counted: list[str] = []
        coverage = ledger.active(COVERAGE)  # once: the ledger changes only at the end, and holds a credit per record
        pending = {sid: credit for sid, credit in coverage.items() if credit["state"] == PENDING}
        # Late records for an earlier quarter whose milestone was missed: that quarter's coverage again.
        late_by_quarter: dict[str, list[str]] = {}
        this = str(quarter)
        for sid, credit in pending.items():
            if credit["quarter"] != this and Quarter.parse(credit["quarter"]) < quarter:
                late_by_quarter.setdefault(credit["quarter"], []).append(sid)
        for earlier, late in sorted(late_by_quarter.items()):
            counted.extend(late)
            before = recorded(Evaluation.create_id(pid, earlier))
            if before is None or before.milestone is None or before.earned > ZERO or before.state == REJECTED:
                continue  # nothing to reconsider: not evaluated, no milestone, already met, or rejected
            outcome = self._coverage(progress, Quarter.parse(earlier), rule, coverage, calendar, first, recorded, rosters)
            made.append(Evaluation(pid, str(quarter), f"adjustment:{earlier}", outcome.milestone, COVERAGE, rule_version,
                                   outcome.earned, "met_on_late_records" if outcome.met else "still_missed",
                                   {**_pcp_figures(outcome, coverage, earlier), "late_credits": sorted(late),
                                    "adjusts": str(before.id)}).with_coverage_noted())
        outcome = self._coverage(progress, quarter, rule, coverage, calendar, first, recorded, rosters)
        this_quarter = sorted(s for s, c in pending.items() if c["quarter"] == this)
        counted.extend(this_quarter)
        result = "met" if outcome.met else ("no_milestone_for_quarter" if outcome.milestone is None else "missed")
        made.append(Evaluation(pid, str(quarter), "quarter", outcome.milestone, COVERAGE, rule_version, outcome.earned,
                               result, _pcp_figures(outcome, coverage, this)).with_coverage_noted())
        ledger.evaluated(evaluation_id=made[-1].id, counted=counted, recovered=[], carried=ledger.carried)
        return [*made, ledger]

    def _coverage(self, progress: ParticipantProgress, quarter: Quarter, rule: CoveragePerPeriod,
                  coverage: dict[str, dict[str, Any]], calendar: QuarterCalendar, first: Quarter,
                  recorded: Callable[[UUID], Evaluation | None],
                  rosters: Mapping[UUID, Aggregate] | None = None) -> PcpOutcome:
        """`coverage`: the ledger's active coverage credits (`CreditLedger.active(COVERAGE)`)."""
        this = str(quarter)
        with_record = {c["member_id"] for c in coverage.values() if c["quarter"] == this}
        return pcp_quarter(rule, quarter.index_from(first), quarter, self.attributed(progress, quarter, calendar, rosters),
                           with_record, self._met_before(progress.participant_id, first, quarter, recorded))

    # -- validation ------------------------------------------------------------------------------------------
    def validate(self, evaluation_id: UUID, by: str, now: datetime) -> Evaluation:
        return retry_on_conflict(lambda: self._validate(evaluation_id, by, now), "the evaluation")

    def _validate(self, evaluation_id: UUID, by: str, now: datetime) -> Evaluation:
        evaluation = self.evaluation(evaluation_id)
        if evaluation.state == VALIDATED:
            return evaluation
        if evaluation.state == REJECTED:
            raise DecisionConflict("this evaluation was rejected; it cannot be validated")
        recorded = link_to(self.recorded_trace(evaluation.id))
        with TRACER.start_as_current_span("validate evaluation", links=[recorded] if recorded else []) as span:
            span.set_attribute("dsi.evaluation_id", str(evaluation.id))
            evaluation.validate(participant_id=evaluation.participant_id, quarter=evaluation.quarter,
                                milestone=evaluation.milestone, earned=evaluation.earned,
                                rule_version=evaluation.rule_version, credits=evaluation.paid_credits,
                                validated_by=by, validated_at=now)
            self.save(evaluation)
        return evaluation

    def reject(self, evaluation_id: UUID, reason: str, by: str, now: datetime) -> Evaluation:
        return retry_on_conflict(lambda: self._reject(evaluation_id, reason, by, now), "the evaluation")

    def _reject(self, evaluation_id: UUID, reason: str, by: str, now: datetime) -> Evaluation:
        evaluation = self.evaluation(evaluation_id)
        if evaluation.state == REJECTED:
            return evaluation
        if evaluation.state == VALIDATED:
            raise DecisionConflict("this evaluation was validated and handed to payments; it cannot be rejected")
        evaluation.reject(reason=reason, rejected_by=by, rejected_at=now)
        self.save(evaluation)
        return evaluation


@dataclass(frozen=True)
class _BlockSaving:
    """A block of participants decided, and its save (None: nothing to save) under way."""

    block: list[ParticipantProgress]
    made: list[list[Aggregate]]
    saved: Future[Any] | None


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector paused while a close loads and evaluates: loading a block builds hundreds of
    thousands of small dicts (each roster's members, each ledger's credits), which trigger collection after
    collection, each walking every object alive — most of the loading time, measured. None of them is in a cycle:
    reference counting frees them as usual. Re-enabled after (unless it was off already)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _of_kind(found: Aggregate | None, kind: type[A]) -> A | None:
    if found is None or isinstance(found, kind):
        return found
    raise TypeError(f"{found.id} is a {type(found).__name__}, not a {kind.__name__}")


def _credit_links(ledger: CreditLedger) -> list[Link]:
    """Links to the traces the participant's pending credits arrived in (each from an HL7 message or a record), at
    most the 128 a span keeps (the first ones: a PCP's ledger holds a credit per member with a record)."""
    links = (link_to(trace) for c in ledger.credits.values() if c["state"] == PENDING and (trace := c.get("trace")))
    return list(islice((link for link in links if link is not None), 128))


def _pcp_figures(outcome: PcpOutcome, credits: dict[str, dict[str, Any]], quarter: str) -> dict[str, Any]:
    """`credits`: the ledger's active coverage credits."""
    coverage = Decimal(outcome.numerator * 100) / outcome.denominator if outcome.denominator else ZERO
    return {"data_sharing_quarter": outcome.index, "threshold_percent": outcome.threshold,
            "attributed_members": outcome.denominator, "members_with_record": outcome.numerator,
            "coverage_percent": str(coverage.quantize(Decimal("0.01"))),
            "record_credits": sorted(s for s, c in credits.items() if c["quarter"] == quarter)}

