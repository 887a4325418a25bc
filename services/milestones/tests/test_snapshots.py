"""Snapshots of rosters and ledgers (issue 14 §3): a close reads them through snapshots and evaluates exactly as it
does replaying every event; every path that records takes them; `dsi audit replay` reports one that does not match
the events; they are stored through the application's mapper, like the events (SQLite, no bus)."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest
from dsi_shared.audit import AuditContext
from dsi_shared.natsserver import port_open
from dsi_shared.rulebook import RulesCopy
from dsi_shared.unitofwork import unit_of_work
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Tracking
from milestones import snapshots
from milestones.application import Milestones
from milestones.audit import audit
from milestones.domain import ParticipantProgress
from milestones.earning import COVERAGE, PER_FILE
from milestones.ledger import AttributionRoster, CreditLedger

from tests.harness import fresh_database
from tests.rulesdoc import packaged

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
SIGNED = datetime(2024, 6, 3, 17, tzinfo=UTC)
OFF = {"IS_SNAPSHOTTING_ENABLED": "n"}
QUARTER_STARTS = {"2025Q1": date(2025, 1, 1), "2025Q2": date(2025, 4, 1), "2025Q3": date(2025, 7, 1),
                  "2025Q4": date(2025, 10, 1), "2026Q1": date(2026, 1, 1)}


def _pid(n: int) -> UUID:
    return uuid5(UUID(int=0), f"participant-{n}")


def _enrol(app: Milestones, n: int, provider_type: str) -> UUID:
    progress = ParticipantProgress(_pid(n))
    progress.note_registration(provider_type, f"{2_000_000_000 + n}", f"Practice {n}")
    progress.note_eligibility(True, "2024.1")
    for agreement in ("LOA", "DSA", "HIE"):
        progress.note_agreement(agreement, SIGNED, f"{agreement}-{n}")
        progress.note_review(agreement, f"{agreement}-{n}", "accepted")
    progress.decide_milestone_1(app.rulebook())
    app.save(progress)
    return progress.participant_id


def _credit(app: Milestones, pid: UUID, rule: str, quarter: str, member: str, sid: str) -> None:
    ledger = app.ledger_or_new(pid)
    ledger.note_credit(sid, rule, member, quarter, Decimal("400.00") if rule == PER_FILE else Decimal("0.00"), "2024.1")
    app.save(ledger)


def _attribute(app: Milestones, npi: str, members: list[str], start: date, end: date | None = None) -> None:
    roster = app.roster(npi) or AttributionRoster(npi)
    for cin in members:
        roster.attribute(cin=cin, start=start, end=end)
        roster.note_membership(cin=cin, start=date(2024, 1, 1), end=None)
    app.save(roster)


def _a_year(app: Milestones) -> list[tuple[Any, ...]]:
    """Five quarters of two PCPs and two SNFs, growing and changing between closes (members attributed, moved
    out, late records, files cancelled after evaluation), closed one after another: every evaluation's figures
    and every close's dollars."""
    rules = RulesCopy()
    rules.note(packaged())
    app.save(rules)
    pcps, snfs = [_enrol(app, n, "primary_care") for n in (1, 2)], [_enrol(app, n, "skilled_nursing") for n in (3, 4)]
    results: list[tuple[Any, ...]] = []
    for q, quarter in enumerate(("2025Q1", "2025Q2", "2025Q3", "2025Q4", "2026Q1")):
        for p, pid in enumerate(pcps):
            npi = f"{2_000_000_000 + p + 1}"
            members = [f"{p}{m:07d}A" for m in range(40 + 7 * q)]
            joining = members[40 + 7 * (q - 1):] if q else members
            _attribute(app, npi, joining, QUARTER_STARTS[quarter])
            if q == 2:  # some members leave the roster
                _attribute(app, npi, members[:5], date(2025, 1, 1), end=date(2025, 6, 30))
            for m, cin in enumerate(members):
                if (m + q + p) % 10 < 8 + p:  # 80% or 90% have a record in the quarter
                    _credit(app, pid, COVERAGE, quarter, cin, f"pcp-{p}-{q}-{m}")
            if q in (1, 3):  # a record for the previous quarter arrives late
                _credit(app, pid, COVERAGE, ("2025Q1", "2025Q2", "2025Q3", "2025Q4")[q - 1], members[-1], f"late-{p}-{q}")
        for s, pid in enumerate(snfs):
            for f in range(9 + s + q):
                _credit(app, pid, PER_FILE, quarter, f"{s}{f:07d}B", f"snf-{s}-{q}-{f}")
            if q:
                ledger = app.ledger_or_new(pid)
                ledger.note_reversal(f"snf-{s}-{q - 1}-0")  # a file cancelled after its quarter was evaluated
                app.save(ledger)
        summary = app.close_quarter(quarter, "program-staff#test", NOW)
        results.append(("close", quarter, summary["evaluations"], summary["participants"], summary["earned"],
                        summary["adjustments"]))
        for e in sorted(app.evaluations(quarter=quarter), key=lambda e: (str(e.participant_id), e.subject)):
            results.append((str(e.participant_id), e.quarter, e.subject, e.milestone, e.earning_rule, e.rule_version,
                            e.earned, e.outcome, e.figures, e.state))
    return results


def _snapshots_of(app: Milestones, aggregate_id: UUID) -> list[Any]:
    assert app.snapshots is not None
    return list(app.snapshots.get(aggregate_id))


def test_a_year_closed_through_snapshots_evaluates_every_participant_exactly_as_replaying_every_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "BASE_STEP", 16)  # many snapshots, taken between closes and in them
    with_snapshots = Milestones(f"sqlite:///{tmp_path / 'on.db'}")
    without = Milestones(f"sqlite:///{tmp_path / 'off.db'}", OFF)
    assert without.snapshots is None and with_snapshots.snapshots is not None
    expected = _a_year(without)
    assert _a_year(with_snapshots) == expected
    assert sum(e[6] for e in expected if e[0] != "close") > 0 and any(e[2] != "quarter" for e in expected)
    rosters = [AttributionRoster.create_id(f"{2_000_000_000 + p}") for p in (1, 2)]
    ledgers = [CreditLedger.create_id(_pid(n)) for n in (1, 2, 3, 4)]
    assert all(_snapshots_of(with_snapshots, i) for i in rosters + ledgers)  # the close did read through them
    report = audit(with_snapshots, AuditContext())
    assert report.problems == []


def test_a_snapshot_is_taken_by_the_consumers_tracked_saves_too(tmp_path: Path) -> None:
    app = Milestones(f"sqlite:///{tmp_path / 'm.db'}")
    roster = AttributionRoster("2000000001")
    for m in range(150):
        roster.attribute(cin=f"{m:08d}A", start=date(2025, 1, 1), end=None)
    assert app.save_tracked([roster], Tracking("enrollment", 1))
    assert _snapshots_of(app, roster.id) == []  # 151 events: no checkpoint passed yet
    roster = app.roster("2000000001")
    assert roster is not None
    for m in range(150, 200):
        roster.attribute(cin=f"{m:08d}A", start=date(2025, 1, 1), end=None)
    assert app.save_tracked([roster], Tracking("enrollment", 2))
    assert [s.originator_version for s in _snapshots_of(app, roster.id)] == [201]
    loaded = app.roster("2000000001")
    assert loaded is not None and vars(loaded) == vars(roster)


def test_a_batchs_second_change_to_a_ledger_is_decided_from_the_first_not_from_the_stored_ledger(
        tmp_path: Path) -> None:
    """Two credits for one participant in one consumer batch: the second handler must load the ledger the first
    changed. Loaded from the store through the snapshot repository instead, both changes claimed the same next
    version and the group could never be saved (30 conflicts in a row, then each message alone)."""
    app = Milestones(f"sqlite:///{tmp_path / 'm.db'}")
    pid = _pid(1)
    _credit(app, pid, PER_FILE, "2025Q1", "10000000B", "snf-0")
    with unit_of_work(app.repository) as work:
        first = app.ledger_or_new(pid)
        first.note_credit("snf-1", PER_FILE, "10000001B", "2025Q1", Decimal("400.00"), "2024.1")
        work.keep([first])
        second = app.ledger_or_new(pid)
        assert second is first
        second.note_credit("snf-2", PER_FILE, "10000002B", "2025Q1", Decimal("400.00"), "2024.1")
        work.keep([second])
        batch = work.events
    assert app.save_tracked(batch, Tracking("submissions", 1), Tracking("submissions", 2))
    assert set(app.ledger_or_new(pid).credits) == {"snf-0", "snf-1", "snf-2"}


def test_snapshot_checkpoints_grow_with_the_aggregate_so_a_huge_roster_is_not_rewritten_every_few_events() -> None:
    checkpoints = [v for v in range(1, 1_000_001) if v % snapshots.step(v) == 0]
    assert checkpoints[:3] == [200, 400, 600]
    assert len(checkpoints) < 60  # a million events: a few dozen snapshots, not 5,000
    gaps = pairwise(checkpoints)
    assert all(b - a <= max(200, b // 4) for a, b in gaps)  # a load replays at most a quarter of the events
    assert snapshots.passes_checkpoint(199, 200) and snapshots.passes_checkpoint(150, 450)
    assert not snapshots.passes_checkpoint(200, 399)


def _roster_of_five(app: Milestones) -> AttributionRoster:
    _attribute(app, "2000000001", [f"{m:08d}A" for m in range(5)], date(2025, 1, 1))
    roster = app.roster("2000000001")
    assert roster is not None and roster.version == 11 and _snapshots_of(app, roster.id) == []
    return roster


def test_replay_reports_a_snapshot_that_does_not_match_the_events(tmp_path: Path) -> None:
    app = Milestones(f"sqlite:///{tmp_path / 'm.db'}")
    roster = _roster_of_five(app)
    assert audit(app, AuditContext()).problems == []
    roster.spans.pop("00000000A|2025-01-01")  # a member dropped outside any event
    assert app.snapshots is not None
    app.snapshots.put([Snapshot.take(roster)])
    forged = app.roster("2000000001")
    assert forged is not None and len(forged.spans) == 4  # loads would read the forged state
    [problem] = audit(app, AuditContext()).problems
    assert f"AttributionRoster {roster.id}" in problem and "does not match the log" in problem
    assert "00000000A" not in problem  # never a CIN


def test_replay_reports_a_snapshot_beyond_the_last_event(tmp_path: Path) -> None:
    app = Milestones(f"sqlite:///{tmp_path / 'm.db'}")
    roster = _roster_of_five(app)
    stale = Snapshot.take(roster)
    assert app.snapshots is not None
    app.snapshots.put([Snapshot(originator_id=roster.id, originator_version=12, timestamp=stale.timestamp,
                                topic=stale.topic, state=stale.state)])
    [problem] = audit(app, AuditContext()).problems
    assert "snapshot at v12 but events only to v11" in problem


def test_snapshots_are_stored_through_the_events_mapper_encrypted_when_the_events_are(tmp_path: Path) -> None:
    key = "K" * 43 + "="  # base64 of 32 bytes
    encrypted = {"CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher", "CIPHER_KEY": key}
    app = Milestones(f"sqlite:///{tmp_path / 'm.db'}", encrypted)
    roster = AttributionRoster("2000000001")
    for m in range(200):
        roster.attribute(cin=f"{m:08d}Z", start=date(2025, 1, 1), end=None)
    app.save(roster)
    assert app.snapshots is not None
    [stored] = app.snapshots.recorder.select_events(roster.id)
    assert b"00000007Z" not in stored.state and app.roster("2000000001") is not None


def test_a_credit_arriving_while_a_block_is_evaluated_redoes_the_block_one_by_one_and_counts_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = Milestones(f"sqlite:///{tmp_path / 'm.db'}")
    rules = RulesCopy()
    rules.note(packaged())
    app.save(rules)
    snfs = [_enrol(app, n, "skilled_nursing") for n in range(3)]
    for pid in snfs:
        _credit(app, pid, PER_FILE, "2025Q4", "12345678A", f"first-{pid}")
    consumer = Milestones(f"sqlite:///{tmp_path / 'm.db'}")  # another writer on the same store
    evaluate_one = Milestones._evaluate_one
    arrived: list[UUID] = []

    def evaluate_then_a_credit_arrives(self: Milestones, progress: ParticipantProgress, *args: Any) -> Any:
        made = evaluate_one(self, progress, *args)
        if progress.participant_id == snfs[1] and not arrived:
            arrived.append(progress.participant_id)
            _credit(consumer, snfs[1], PER_FILE, "2025Q4", "12345678A", "arrived-meanwhile")
        return made

    monkeypatch.setattr(Milestones, "_evaluate_one", evaluate_then_a_credit_arrives)
    summary = app.close_quarter("2025Q4", "program-staff#test", NOW)
    earned = {e.participant_id: e.earned for e in app.evaluations(quarter="2025Q4")}
    assert arrived and earned == {snfs[0]: Decimal("400.00"), snfs[1]: Decimal("800.00"), snfs[2]: Decimal("400.00")}
    assert (summary["evaluations"], summary["earned"]) == (3, Decimal("1600.00"))


def _postgres_server() -> str:
    server = os.environ.get("DSI_TEST_POSTGRES") or "postgresql://postgres@127.0.0.1:5432/postgres"
    if not os.environ.get("DSI_TEST_POSTGRES") and not port_open("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL: set DSI_TEST_POSTGRES or run one on 127.0.0.1:5432")
    return server


def test_a_year_closed_on_postgresql_loading_each_block_together_evaluates_exactly_as_replaying_every_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a close loads a block's progress, ledgers and rosters in two queries (`Snapshots.load_many`):
    latest snapshot and the events after it, per aggregate, as one load each would."""
    monkeypatch.setattr(snapshots, "BASE_STEP", 16)  # snapshots of every size, with events after them
    expected = _a_year(Milestones(f"sqlite:///{tmp_path / 'off.db'}", OFF))
    with fresh_database(_postgres_server()) as dsn:
        app = Milestones(dsn)
        assert _a_year(app) == expected
        ids = [AttributionRoster.create_id(f"{2_000_000_000 + p}") for p in (1, 2)]
        ids += [CreditLedger.create_id(_pid(n)) for n in (1, 2, 3, 4)] + [ParticipantProgress.create_id(_pid(1))]
        assert app.snapshotted is not None
        together = app.snapshotted.load_many([*ids, AttributionRoster.create_id("no such roster")])
        assert list(together) == ids
        assert all(vars(together[i]) == vars(app.snapshotted.load(i)) for i in ids)
        assert all(_snapshots_of(app, i) for i in ids[:6]) and not _snapshots_of(app, ids[6])
        assert audit(app, AuditContext()).problems == []
        app.close()


def test_a_columnar_snapshot_loads_the_same_state_as_a_plain_one_value_for_value() -> None:
    ledger = CreditLedger(_pid(1))
    ledger.note_credit("a", COVERAGE, "00000001A", "2025Q4", Decimal("0.00"), "2024.1", trace={"traceparent": "00-1"})
    ledger.note_credit("b", COVERAGE, "00000002A", "2025Q4", Decimal("0.0"), "2024.1")  # not the same amount as 0.00
    ledger.note_credit("c", PER_FILE, "00000003B", "2025Q3", Decimal("400.00"), "2024.2")
    ledger.note_reversal("c")
    ledger.note_reversal("d")  # before its credit
    roster = AttributionRoster("2000000001")
    for m in range(3):
        roster.attribute(cin=f"{m:08d}A", start=date(2025, 1, 1), end=date(2025, 12, 31) if m else None)
        roster.note_membership(cin=f"{m:08d}A", start=date(2024, 1, 1), end=None)
    roster.note_membership(cin="00000001A", start=date(2026, 1, 1), end=None)  # two spans for one member
    for aggregate in (ledger, roster):
        taken = snapshots.ColumnarSnapshot.take(aggregate)
        assert set(taken.state[snapshots.PACKED]) == set(snapshots.COLUMNAR[type(aggregate)])
        loaded, plain = taken.mutate(None), Snapshot.take(aggregate).mutate(None)
        assert vars(loaded) == vars(plain) == {k: v for k, v in vars(aggregate).items() if k != "_pending_events"} | {
            "_pending_events": []}
    loaded_ledger = snapshots.ColumnarSnapshot.take(ledger).mutate(None)
    assert isinstance(loaded_ledger, CreditLedger)
    assert [str(c["amount"]) for c in loaded_ledger.credits.values()] == ["0.00", "0.0", "400.00"]
    assert loaded_ledger.credits["a"]["trace"] is not loaded_ledger.credits["b"]["trace"]  # never shared


def test_entries_that_do_not_fit_columns_are_kept_as_they_are() -> None:
    assert snapshots.pack_entries({"x": {"a": 1}, "y": {"b": 1}}, 1) is None  # different fields
    assert snapshots.pack_entries({"x": {}}, 2) is None  # an empty inner level could not be told apart
    assert snapshots.pack_entries({"x": 1}, 1) is None  # not entries
    for entries, depth in (({"x": {"a": True}, "y": {"a": 1}}, 1), ({}, 2), ({"m": {"k": {"s": None}}}, 2)):
        packed = snapshots.pack_entries(entries, depth)
        assert packed is not None
        unpacked = snapshots.unpack_entries(packed)
        assert unpacked == entries and [type(v.get("a")) for v in unpacked.values()] == \
            [type(v.get("a")) for v in entries.values()]
    roster = AttributionRoster("2000000001")
    roster.spans["odd"] = {"start": date(2025, 1, 1)}  # a span without an end: the field stays as it was
    roster.attribute(cin="00000001A", start=date(2025, 1, 1), end=None)
    taken = snapshots.ColumnarSnapshot.take(roster)
    assert "spans" in taken.state and set(taken.state[snapshots.PACKED]) == {"membership"}
    assert vars(taken.mutate(None)) == vars(Snapshot.take(roster).mutate(None))
