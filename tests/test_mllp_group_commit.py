"""The MLLP group commit (issue 14 §3): files from concurrent connections are committed together, judged exactly as
if sent one by one (a copy in the same group is the earlier file's duplicate, a cancel in it withdraws the earlier
credit); a file that cannot be judged, or a group whose transaction fails, costs the other files nothing. On
PostgreSQL and SQLite; nothing timed: groups are formed by holding a commit until the next files are waiting."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from dsi_shared.natsserver import free_port
from dsi_shared.plantime import PLAN_ZONE
from dsi_shared.rulebook import RulesCopy
from opentelemetry import context as otel_context
from opentelemetry import trace
from submissions.application import Evaluation, HL7Receipt, Submissions
from submissions.domain import FacilityIndex, MemberFacts, ParticipantFacts, Submission
from submissions.mllp import MllpListener

from tests.harness import eventually, mllp_exchange
from tests.hl7_corpus import FACILITY, adt, combined
from tests.rulesdoc import packaged
from tests.x12_834 import cin

pytestmark = pytest.mark.integration
RECEIVED = datetime(2025, 11, 1, 18, 0, tzinfo=PLAN_ZONE)


@pytest.fixture(autouse=True)
def group_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_MLLP_GROUP_COMMIT", "on")


@pytest.fixture
def seeded(store_kind: str, store_url_for: Callable[[str], str]) -> Callable[[], Submissions]:
    """Makes a submissions store (a new one per call with SQLite; the test's database with PostgreSQL, so call it
    once there) that knows one SNF past Milestone 1 and three plan members, as enrollment would have told it."""
    stores = iter(range(100))

    def make() -> Submissions:
        app = Submissions(store_url_for(f"submissions{next(stores)}"))
        participant = ParticipantFacts(uuid.uuid4())
        participant.note_registration(provider_type="skilled_nursing", npi="1234567893", sending_facilities=[FACILITY])
        participant.note_eligibility(eligible=True, rule_version="2024.1")
        participant.note_milestone1(achieved_at=datetime(2024, 6, 1, tzinfo=UTC))
        rules = RulesCopy()
        rules.note(packaged())
        members = []
        for n in range(3):
            member = MemberFacts(cin(n))
            member.note_span(start=date(2024, 1, 1), end=None, version=1)
            members.append(member)
        app.save(rules, participant, FacilityIndex(FACILITY, participant.participant_id), *members)
        return app

    return make


def files() -> list[bytes]:
    """Copies, a cancel, a re-admission after it, a second event of one visit, a stranger and garbage: every way one
    file's verdict depends on another's."""
    return [f.encode() for f in [
        combined("A01", cin(0), visit="V1"),
        combined("A01", cin(0), visit="V1"),  # a copy (new MSH-10s): duplicate of the first
        combined("A01", cin(1), visit="V2"),
        adt("A11", cin(0), visit="V1"),  # cancels the first file's admission
        combined("A01", cin(0), visit="V1"),  # admitted again after the cancel
        combined("A03", cin(1), visit="V2", occurred="20251101120000"),
        combined("A01", cin(2), visit="V3", facility="OTHER_SNF"),  # unknown sender
        "\x00\x01 not hl7",
    ]]


def outcome(evaluations: Sequence[Evaluation | Exception]) -> list[Any]:
    """What each file was answered: verdict, reasons (earlier files named by position, not by id), ACK codes."""
    position = {s.id: i for i, e in enumerate(evaluations) if isinstance(e, Evaluation) for s in e.submissions}
    seen: list[Any] = []
    for evaluation in evaluations:
        if isinstance(evaluation, Exception):
            seen.append(type(evaluation).__name__)
            continue
        answer = evaluation.answers[0]
        reasons = [f"{r.split(':')[0]}:#{position.get(uuid.UUID(r.split(':')[1]), 'elsewhere')}"
                   if r.startswith(("duplicate_of:", "cancels:")) else r for r in answer.reasons]
        seen.append((answer.verdict, reasons, [a.ack_code for a in evaluation.answers]))
    return seen


def recorded(app: Submissions) -> list[tuple[str | None, str, bool]]:
    """Every submission in the store: verdict, amount and whether its credit still stands."""
    return sorted((s.verdict, str(s.amount), s.reversed_by is None) for s in
                  map(app.submission, app.ids_created_with(Submission.SubmissionReceived)))  # type: ignore[attr-defined]


def receipts(data: Sequence[bytes], received_at: datetime = RECEIVED) -> list[HL7Receipt]:
    return [HL7Receipt(d, received_at + timedelta(seconds=i), "mllp") for i, d in enumerate(data)]


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_files_committed_in_one_group_are_judged_exactly_as_if_sent_one_by_one(
        seeded: Callable[[], Submissions]) -> None:
    one_by_one, together = seeded(), seeded()
    expected = outcome([one_by_one.receive_hl7(r.data, r.received_at, r.channel) for r in receipts(files())])
    assert [e[0] for e in expected] == ["credited", "rejected", "credited", "recorded", "credited", "credited",
                                        "rejected", "rejected"]
    assert expected[1][1] == ["duplicate_of:#0"] and expected[3][1] == ["cancels:#0"]
    assert outcome(together.receive_hl7_group(receipts(files()))) == expected
    assert recorded(together) == recorded(one_by_one)


def test_a_group_is_one_transaction_for_all_its_files(seeded: Callable[[], Submissions],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    app = seeded()
    saves: list[int] = []
    record = app._record

    def counted(processing: Any) -> Any:
        saves.append(len(processing.events))
        return record(processing)

    monkeypatch.setattr(app, "_record", counted)
    results = app.receive_hl7_group(receipts(files()))
    assert len(saves) == 1 and all(isinstance(r, Evaluation) for r in results)
    assert [v for v, _, _ in recorded(app)].count("credited") == 4


def test_a_file_that_cannot_be_judged_costs_the_others_of_its_group_nothing(
        seeded: Callable[[], Submissions], monkeypatch: pytest.MonkeyPatch) -> None:
    app = seeded()
    evaluate = app.evaluate_hl7

    def failing(data: bytes, *args: Any, **kwargs: Any) -> Evaluation:
        if b"BOOM" in data:
            raise RuntimeError("a bug met by one file")
        return evaluate(data, *args, **kwargs)

    monkeypatch.setattr(app, "evaluate_hl7", failing)
    group = [combined("A01", cin(0), visit="V1").encode(), adt("A01", cin(1), control_id="BOOM").encode(),
             combined("A01", cin(0), visit="V1").encode(), combined("A01", cin(1), visit="V2").encode()]
    assert outcome(app.receive_hl7_group(receipts(group))) == [
        ("credited", [], ["AA", "AA", "AA"]), "RuntimeError", ("rejected", ["duplicate_of:#0"], ["AA", "AA", "AA"]),
        ("credited", [], ["AA", "AA", "AA"])]
    assert [v for v, _, _ in recorded(app)] == ["credited", "credited", "rejected"]  # each once, nothing else


def test_a_group_whose_transaction_meets_a_concurrent_change_is_recorded_file_by_file(
        seeded: Callable[[], Submissions], store_kind: str, store_url_for: Callable[[str], str]) -> None:
    app = seeded()
    other = Submissions(store_url_for("submissions0"))  # another writer on the same store (HTTP, NATS, a replica)
    copy = combined("A01", cin(0), visit="V1").encode()
    put_many, raced = app.blobs.put_many, []

    def racing(blobs: Any, **options: Any) -> None:  # after the group is judged, before it commits: the other writer
        if not raced:                                    # credits first
            raced.append(other.receive_hl7(copy, RECEIVED, "http"))
        put_many(blobs, **options)

    app.blobs.put_many = racing  # type: ignore[method-assign]
    results = app.receive_hl7_group(receipts([copy, combined("A01", cin(1), visit="V2").encode()]))
    assert outcome(results) == [("rejected", ["duplicate_of:#elsewhere"], ["AA", "AA", "AA"]),
                                ("credited", [], ["AA", "AA", "AA"])]
    assert raced[0].submissions[0].verdict == "credited"
    assert [v for v, _, _ in recorded(app)] == ["credited", "credited", "rejected"]  # the copy credited once
    other.close()


def test_each_file_of_a_group_keeps_its_own_trace(seeded: Callable[[], Submissions]) -> None:
    app = seeded()
    tracer = trace.get_tracer("test")
    contexts, trace_ids = [], []
    for _ in range(2):
        with tracer.start_as_current_span("mllp message") as span:
            contexts.append(otel_context.get_current())
            trace_ids.append(f"{span.get_span_context().trace_id:032x}")
    group = [HL7Receipt(combined("A01", cin(n), visit=f"V{n}").encode(), RECEIVED, "mllp", trace=contexts[n])
             for n in range(2)]
    results = app.receive_hl7_group(group)
    stamped = [app.recorded_trace(r.submissions[0].id)["traceparent"] for r in results if isinstance(r, Evaluation)]
    assert [t.split("-")[1] for t in stamped] == trace_ids


class Held:
    """Wraps the application's group steps: holds the first call of `step` until released (the test's files then
    wait behind it), records each judged group's size and whether it was judged on a commit still running, and
    can make the first commit fail."""

    def __init__(self, app: Submissions, step: str, fail_first_commit: bool = False) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.groups: list[tuple[int, bool]] = []
        self.commits = 0
        judge, commit = app.judge_hl7_group, app.commit_hl7_group

        def judging(receipts: Sequence[HL7Receipt], after: Any = None) -> Any:
            self.groups.append((len(receipts), after is not None))
            if step == "judge" and len(self.groups) == 1:
                self.hold()
            return judge(receipts, after)

        def committing(judged: Any) -> None:
            self.commits += 1
            if step == "commit" and self.commits == 1:
                self.hold()
            if fail_first_commit and self.commits == 1:
                raise RuntimeError("the database went away")
            commit(judged)

        app.judge_hl7_group = judging  # type: ignore[method-assign]
        app.commit_hl7_group = committing  # type: ignore[method-assign]

    def hold(self) -> None:
        self.entered.set()
        self.release.wait(30)


async def exchange_in_groups(app: Submissions, held: Held, lone: bytes, rest: list[bytes]) -> list[bytes]:
    """Send `lone`; once its group is held, send `rest` on as many connections and release when all wait."""
    server = MllpListener(app, free_port(), from_environment=False)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.listening.wait(), 10)
    try:
        first = asyncio.create_task(mllp_exchange(server.port, lone))
        await asyncio.to_thread(held.entered.wait, 30)
        others = [asyncio.create_task(mllp_exchange(server.port, frame)) for frame in rest]

        async def all_waiting() -> bool:
            return len(server.committer.waiting) == len(rest)

        await eventually(all_waiting)
        held.release.set()
        return list(await asyncio.gather(first, *others))
    finally:
        held.release.set()
        server.stopping.set()
        await asyncio.wait_for(task, 10)


def now_files() -> tuple[bytes, list[bytes]]:
    """An admission an hour ago (MLLP receipt is our clock), then two copies of it and another member's admission."""
    occurred = (datetime.now(UTC) - timedelta(hours=1)).astimezone(PLAN_ZONE).strftime("%Y%m%d%H%M%S")
    lone = combined("A01", cin(0), visit="V1", occurred=occurred, control_id="LONE").encode()
    copies = [combined("A01", cin(0), visit="V1", occurred=occurred, control_id=f"COPY{n}").encode() for n in range(2)]
    return lone, [*copies, combined("A01", cin(1), visit="V2", occurred=occurred, control_id="OTHER").encode()]


def verdicts(app: Submissions) -> list[tuple[str | None, str]]:
    found = [app.submission(i) for i in app.ids_created_with(Submission.SubmissionReceived)]  # type: ignore[attr-defined]
    credited = {s.id: s.facts["member_id"] for s in found if s.verdict == "credited"}
    return sorted((s.verdict, f"duplicate_of:{credited[UUID(s.reasons[0].split(':')[1])]}" if s.reasons else "")
                  for s in found)


EXACTLY_ONCE = [("credited", ""), ("credited", ""), ("rejected", f"duplicate_of:{cin(0)}"),
                ("rejected", f"duplicate_of:{cin(0)}")]


async def test_copies_sent_on_concurrent_connections_in_one_group_credit_once(
        seeded: Callable[[], Submissions]) -> None:
    app = seeded()
    held = Held(app, "commit")
    lone, rest = now_files()
    answers = await exchange_in_groups(app, held, lone, rest)
    assert held.groups == [(1, False), (3, False)]  # the lone file committed at once; the three waiting together
    assert all(b"MSA|AA|" in answer for answer in answers)
    assert verdicts(app) == EXACTLY_ONCE


async def test_a_group_judged_while_the_one_before_commits_sees_its_changes(
        seeded: Callable[[], Submissions]) -> None:
    app = seeded()
    held = Held(app, "judge")
    lone, rest = now_files()
    answers = await exchange_in_groups(app, held, lone, rest)
    assert held.groups == [(1, False), (3, True)]  # judged on the lone file's commit still running
    assert all(b"MSA|AA|" in answer for answer in answers)
    assert verdicts(app) == EXACTLY_ONCE


async def test_when_a_commit_fails_its_files_and_the_group_judged_on_it_are_received_one_by_one(
        seeded: Callable[[], Submissions]) -> None:
    app = seeded()
    held = Held(app, "judge", fail_first_commit=True)
    lone, rest = now_files()
    answers = await exchange_in_groups(app, held, lone, rest)
    assert held.groups == [(1, False), (3, True)]
    assert all(b"MSA|AA|" in answer for answer in answers)
    assert verdicts(app) == EXACTLY_ONCE


async def test_with_group_commit_off_each_file_is_committed_alone_as_before(seeded: Callable[[], Submissions],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_MLLP_GROUP_COMMIT", "off")
    app = seeded()
    server = MllpListener(app, free_port(), from_environment=False)
    assert server.committer is None
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.listening.wait(), 10)
    lone, rest = now_files()
    try:
        answers = await asyncio.gather(*(mllp_exchange(server.port, frame) for frame in [lone, *rest]))
    finally:
        server.stopping.set()
        await asyncio.wait_for(task, 10)
    assert all(b"MSA|AA|" in answer for answer in answers)
    assert verdicts(app) == EXACTLY_ONCE
