"""Quarter close (DOMAIN.md A3, A4): a year of a mixed network worked out by hand, the coverage and $400 rules,
late credits as adjustments, closing once and in order — on the milestones store (SQLite), no bus."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from dsi_shared.plantime import BadQuarter, Quarter
from dsi_shared.relay import outgoing
from dsi_shared.rulebook import CoveragePerPeriod, NoRulesYet, RulesCopy
from eventsourcing.persistence import IntegrityError
from hypothesis import given
from hypothesis import strategies as st
from milestones.application import DecisionConflict, Milestones, QuarterNotClosable
from milestones.contract import CONTRACT
from milestones.domain import ParticipantProgress
from milestones.earning import COVERAGE, PER_FILE, pcp_quarter, snf_quarter
from milestones.ledger import VALIDATED, AttributionRoster, CreditLedger, Evaluation
from payments.domain import PaymentAccount

from tests.rulesdoc import amended, book, packaged

D = Decimal
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
SNF_RULE, PCP_RULE = PER_FILE, COVERAGE
CAP = D(packaged()["program"]["cap"])
PCP = book().latest.provider_types["primary_care"].earning_rule  # type: ignore[union-attr]
assert isinstance(PCP, CoveragePerPeriod)
Q = Quarter.parse
CALENDAR = book().calendar  # the shipped one: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec


def test_quarters() -> None:
    q = Quarter.parse("2025Q4")
    assert (CALENDAR.first_day(q), CALENDAR.last_day(q), str(q.next())) == (date(2025, 10, 1), date(2025, 12, 31), "2026Q1")
    assert CALENDAR.quarter_of(date(2024, 2, 29)) == Quarter(2024, 1) and CALENDAR.last_day(Q("2024Q1")) == date(2024, 3, 31)
    assert Quarter.parse("2026Q1").index_from(Quarter.parse("2025Q1")) == 5
    for bad in ("2025Q5", "2025-Q1", "25Q1"):
        with pytest.raises(ValueError):
            Quarter.parse(bad)


def test_a_quarter_is_ascii_digits_in_the_plans_years() -> None:
    """Issue 12 §4: `２０２５Q4` passed `\\d` (and matched nothing); `9999Q4` overflowed date arithmetic."""
    for bad in ("２０２５Q4", "٢٠٢٥Q4", "9999Q4", "0001Q1", "1999Q4", "2101Q1"):
        with pytest.raises(BadQuarter):
            Quarter.parse(bad)
    assert (CALENDAR.first_day(Q("2000Q1")), CALENDAR.last_day(Q("2100Q4"))) == (date(2000, 1, 1), date(2100, 12, 31))


def test_coverage_thresholds_are_exact() -> None:
    members = {f"{n:08d}A" for n in range(100)}
    q = Q("2025Q1")
    assert pcp_quarter(PCP, 1, q, members, set(list(members)[:75])).met  # 75% meets Milestone 2
    assert not pcp_quarter(PCP, 1, q, members, set(list(members)[:74])).met
    assert not pcp_quarter(PCP, 2, q, members, set(list(members)[:89])).met
    assert pcp_quarter(PCP, 2, q, members, set(list(members)[:90])).met
    assert pcp_quarter(PCP, 3, q, members, set(list(members)[:95])).earned == D("10000.00")
    assert not pcp_quarter(PCP, 1, q, set(), set()).met  # nobody attributed: nothing to cover, nothing earned
    outside = pcp_quarter(PCP, 1, q, {"11111111A"}, {"22222222B"})
    assert (outside.numerator, outside.denominator) == (0, 1)  # records for members not attributed do not count


def test_after_the_last_period_quarters_keep_earning_until_the_cap() -> None:
    """"Participants will be eligible to continue earning so long as the maximum of $40,000 has not been
    reached": a 4th data-sharing quarter (and later) keeps earning — at 95% under the shipped `last_threshold`, at
    the earliest missed milestone's own threshold under `earliest_missed`. A missed period does not end earning."""
    members = {f"{n:08d}A" for n in range(100)}
    fourth = pcp_quarter(PCP, 4, Q("2026Q1"), members, set(list(members)[:95]))
    assert (fourth.milestone, fourth.threshold, fourth.earned) == ("M4:2026Q1", 95, D("10000.00"))
    assert not pcp_quarter(PCP, 5, Q("2026Q2"), members, set(list(members)[:94])).met
    retry = PCP.model_copy(update={"after_last_period": "earliest_missed"})
    again = pcp_quarter(retry, 4, Q("2026Q1"), members, set(list(members)[:90]), frozenset({"M2", "M4"}))
    assert (again.milestone, again.threshold, again.met) == ("M3", 90, True)  # M3 was missed: tried again at 90%
    done = pcp_quarter(retry, 5, Q("2026Q2"), members, set(list(members)[:95]), frozenset({"M2", "M3", "M4"}))
    assert (done.milestone, done.threshold) == ("M4:2026Q2", 95)


def test_snf_withdrawals_after_evaluation_are_set_against_later_credits() -> None:
    four = D("400.00")
    assert snf_quarter([four] * 3, [], D("0.00")).earned == D("1200.00")
    assert snf_quarter([four, four], [four], D("0.00")).earned == D("400.00")
    short = snf_quarter([], [four, four], D("0.00"))
    assert (short.earned, short.carry_forward) == (D("0.00"), D("-800.00"))
    assert snf_quarter([four] * 3, [], short.carry_forward).earned == D("400.00")
    assert snf_quarter([four, D("500.00")], [], D("0.00")).earned == D("900.00")  # each credit's own amount


class Network:
    def __init__(self, tmp_path: Path, *documents: dict[str, object], first: dict[str, object] | None = None) -> None:
        """`first`: the first published version (the shipped one unless given)."""
        self.app = Milestones(f"sqlite:///{tmp_path / 'milestones.db'}")
        rules = RulesCopy()
        for document in (first or packaged(), *documents):
            rules.note(document)
        self.app.save(rules)

    def participant(self, provider_type: str, npi: str, individual_npis: list[str] | None = None,
                    signed_at: datetime = datetime(2024, 6, 3, 17, tzinfo=UTC)) -> UUID:
        progress = ParticipantProgress(uuid4())
        progress.note_registration(provider_type, npi, f"{provider_type} {npi}", individual_npis)
        progress.note_eligibility(True, "2024.1")
        for agreement in ("LOA", "DSA", "HIE"):
            progress.note_agreement(agreement, signed_at, f"{agreement}-{npi}")
            progress.note_review(agreement, f"{agreement}-{npi}", "accepted")
        progress.decide_milestone_1(self.app.rulebook())
        self.app.save(progress)
        return progress.participant_id

    def credit(self, pid: UUID, rule: str, quarter: str, member: str = "12345678A") -> str:
        sid = str(uuid4())
        ledger = self.app.ledger_or_new(pid)
        ledger.note_credit(sid, rule, member, quarter, D("400.00") if rule == SNF_RULE else D("0.00"), "2024.1")
        self.app.save(ledger)
        return sid

    def cancel(self, pid: UUID, sid: str) -> None:
        ledger = self.app.ledger_or_new(pid)
        ledger.note_reversal(sid)
        self.app.save(ledger)

    def attribute(self, assignee: str, members: list[str], start: date, end: date | None = None,
                  member_from: date = date(2024, 1, 1)) -> None:
        """Attributed from `start`, plan members from `member_from` (open-ended)."""
        roster = self.app.roster(assignee) or AttributionRoster(assignee)
        for member in members:
            roster.attribute(cin=member, start=start, end=end)
            roster.note_membership(cin=member, start=member_from, end=None)
        self.app.save(roster)

    def close(self, quarter: str) -> dict[str, Evaluation]:
        self.app.close_quarter(quarter, "program-staff#test", NOW)
        return {str(e.participant_id) + ("" if e.subject == "quarter" else f" {e.subject}"): e
                for e in self.app.evaluations(quarter=quarter)}


def test_quarters_are_dated_by_the_calendar_the_first_published_version_brought(tmp_path: Path) -> None:
    """DOMAIN.md A4 "Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec (America/Los_Angeles)" is the
    shipped calendar, not code: a program whose first version starts quarters on Feb 1, May 1, Aug 1 and Nov 1
    has milestones date Milestone 1, the data-sharing start and the close by those quarters."""
    fiscal = amended("2024.1", "2024-01-01", {"program.quarter_calendar.quarter_starts": ["02-01", "05-01", "08-01",
                                                                                        "11-01"]})
    net = Network(tmp_path, first=fiscal)
    snf = net.participant("skilled_nursing", "1111111111", signed_at=datetime(2024, 7, 20, 17, tzinfo=UTC))
    assert net.app.progress(snf).achieved["M1"]["quarter"] == "2024Q2"  # May–Jul (Jul–Sep on the shipped calendar)
    # SNF data sharing starts 2025-10-01: inside 2025Q3 (Aug–Oct) here, so 2025Q3 is its first earning quarter.
    credit = net.credit(snf, SNF_RULE, "2025Q3")
    closed = net.close("2025Q3")
    assert (closed[str(snf)].earned, closed[str(snf)].figures["credits"]) == (D("400.00"), [credit])
    with pytest.raises(QuarterNotClosable, match="2026Q2 has not ended yet \\(it ends 2026-07-31\\)"):
        net.app.close_quarter("2026Q2", "program-staff#test", NOW)  # NOW is 2026-05-01: in 2026Q2 (May–Jul)


def test_without_rules_a_quarter_cannot_be_closed(tmp_path: Path) -> None:
    """No calendar has arrived yet: the close waits for the rules (503), it never guesses the quarter's days."""
    app = Milestones(f"sqlite:///{tmp_path / 'milestones.db'}")
    with pytest.raises(NoRulesYet):
        app.close_quarter("2025Q4", "program-staff#test", NOW)


def coverage_evaluated(app: Milestones) -> list[dict[str, Any]]:
    """Every `coverage-evaluated` payload the relay would publish from the store, in order."""
    bodies = (outgoing(CONTRACT, n.id, app.mapper.to_domain_event(n))
              for n in app.recorder.select_notifications(start=1, limit=100_000))
    return [json.loads(found[1])["data"] for found in bodies
            if found is not None and found[0] == "dsi.milestones.coverage-evaluated"]


def test_a_year_of_a_mixed_network_pays_what_was_worked_out_by_hand(tmp_path: Path) -> None:
    net = Network(tmp_path)
    snf = net.participant("skilled_nursing", "1111111111")
    pcp = net.participant("primary_care", "2222222222")
    spec = net.participant("specialist", "3333333333")
    members = ["10000001A", "10000002A", "10000003A", "10000004A"]
    net.attribute("2222222222", members, date(2025, 1, 1))  # the PCP, named by its NPI in the attribution file
    net.attribute("2222222222", ["10000009A"], date(2024, 1, 1), date(2024, 12, 31))  # ended before: not counted

    # 2025Q1, the PCP's first data-sharing quarter: 3 of 4 members have a record = 75% → Milestone 2 met.
    for member in members[:3]:
        net.credit(pcp, PCP_RULE, "2025Q1", member)
    q1 = net.close("2025Q1")
    assert set(q1) == {str(pcp)}  # SNF and specialist start sharing in 2025Q4
    assert (q1[str(pcp)].milestone, q1[str(pcp)].outcome, q1[str(pcp)].earned) == ("M2", "met", D("10000.00"))
    assert q1[str(pcp)].figures["coverage_percent"] == "75.00"

    # 2025Q2: 3 of 4 = 75% < 90% → Milestone 3 missed, $0, recorded with the figures.
    for member in members[:3]:
        net.credit(pcp, PCP_RULE, "2025Q2", member)
    q2 = net.close("2025Q2")
    assert (q2[str(pcp)].milestone, q2[str(pcp)].outcome, q2[str(pcp)].earned) == ("M3", "missed", D("0.00"))
    # A record received in 2025Q2 arrives after the close: reported at the next close, where it completes 2025Q2.
    net.credit(pcp, PCP_RULE, "2025Q2", members[3])

    # 2025Q3: 4 of 4 → Milestone 4 met; and the 2025Q2 adjustment: 4 of 4 ≥ 90% → Milestone 3 met after all.
    for member in members:
        net.credit(pcp, PCP_RULE, "2025Q3", member)
    q3 = net.close("2025Q3")
    assert (q3[str(pcp)].milestone, q3[str(pcp)].earned) == ("M4", D("10000.00"))
    adjustment = q3[f"{pcp} adjustment:2025Q2"]
    assert (adjustment.milestone, adjustment.outcome, adjustment.earned) == ("M3", "met_on_late_records", D("10000.00"))
    # on the bus, each coverage evaluation as counts only (the console's coverage chart): the adjustment, then the
    # quarter's own, both of the close of 2025Q3; no member
    stated = coverage_evaluated(net.app)
    assert [(c["quarter"], c["aggregate_id"], c["members_with_record"], c["attributed_members"], c["coverage_percent"],
             c["threshold_percent"]) for c in stated[-2:]] == [
        ("2025Q3", str(adjustment.id), 4, 4, "100.00", 90), ("2025Q3", str(q3[str(pcp)].id), 4, 4, "100.00", 95)]
    assert [c["coverage_percent"] for c in stated[:2]] == ["75.00", "75.00"]
    assert not any(member in json.dumps(stated) for member in members)

    # 2025Q4: SNF 3 timely files ($1,200); the specialist's rule is forthcoming ($0, said so); the PCP's 4th
    # data-sharing quarter keeps earning at 95% (`last_threshold`): 4 of 4 have no record this quarter → missed.
    credits = [net.credit(snf, SNF_RULE, "2025Q4") for _ in range(3)]
    q4 = net.close("2025Q4")
    assert q4[str(snf)].earned == D("1200.00") and q4[str(snf)].figures["credits"] == sorted(credits)
    assert (q4[str(spec)].outcome, q4[str(spec)].earned) == ("earning_rule_forthcoming", D("0.00"))
    assert (q4[str(pcp)].milestone, q4[str(pcp)].outcome, q4[str(pcp)].earned) == ("M4:2025Q4", "missed", D("0.00"))

    # 2026Q1: 2 new files, 1 late 2025Q4 file, and a 2025Q4 file cancelled after it was evaluated: 800 + 400 - 400.
    new = [net.credit(snf, SNF_RULE, "2026Q1") for _ in range(2)]
    late = net.credit(snf, SNF_RULE, "2025Q4")
    net.cancel(snf, credits[0])
    q5 = net.close("2026Q1")
    snf_q1 = q5[str(snf)]
    assert snf_q1.earned == D("800.00")
    assert (snf_q1.figures["credits"], snf_q1.figures["late_credits"]) == (sorted(new), [late])
    assert snf_q1.figures["withdrawn_after_evaluation"] == [credits[0]]

    # Staff validate everything; payments pay M1 and each validated evaluation, capped.
    accounts = {pid: PaymentAccount(pid) for pid in (snf, pcp, spec)}
    for account in accounts.values():
        account.pay("M1", D("10000.00"), "2024Q2", "2024.1", source_event="m1", cap=CAP)
    for quarter in ("2025Q1", "2025Q2", "2025Q3", "2025Q4", "2026Q1"):
        for evaluation in net.app.evaluations(quarter=quarter):
            validated = net.app.validate(evaluation.id, "program-staff#test", NOW)
            assert validated.state == VALIDATED
            if validated.earned > 0 and validated.milestone:
                accounts[validated.participant_id].pay(validated.milestone, validated.earned, quarter, "2024.1",
                                                       source_event=str(validated.id), cap=CAP,
                                                       covers=validated.paid_credits)
    assert {pid: a.total_paid for pid, a in accounts.items()} == {
        snf: D("12000.00"),  # 10,000 + 1,200 + 800
        pcp: CAP,  # 10,000 + M2 + M3 (late) + M4
        spec: D("10000.00"),  # Milestone 1 only
    }


def test_closing_twice_changes_nothing_and_quarters_close_in_order_once_ended(tmp_path: Path) -> None:
    net = Network(tmp_path)
    snf = net.participant("skilled_nursing", "1111111111")
    net.credit(snf, SNF_RULE, "2025Q4")
    first = net.app.close_quarter("2025Q4", "program-staff#a", NOW)
    events_after_first = net.app.recorder.max_notification_id()
    again = net.app.close_quarter("2025Q4", "program-staff#b", NOW)
    assert again["already_closed"] and again["closed_by"] == first["closed_by"] == "program-staff#a"
    assert net.app.recorder.max_notification_id() == events_after_first
    with pytest.raises(QuarterNotClosable, match="in order"):
        net.app.close_quarter("2025Q3", "program-staff#a", NOW)
    with pytest.raises(QuarterNotClosable, match="not ended"):
        net.app.close_quarter("2026Q2", "program-staff#a", NOW)


def test_a_rejected_evaluation_is_never_paid_and_cannot_then_be_validated(tmp_path: Path) -> None:
    net = Network(tmp_path)
    snf = net.participant("skilled_nursing", "1111111111")
    net.credit(snf, SNF_RULE, "2025Q4")
    [evaluation] = net.close("2025Q4").values()
    rejected = net.app.reject(evaluation.id, "files under review by compliance", "program-staff#a", NOW)
    assert rejected.decision is not None and rejected.decision["reason"] == "files under review by compliance"
    with pytest.raises(DecisionConflict):
        net.app.validate(evaluation.id, "program-staff#a", NOW)


def test_a_credit_arriving_while_a_participant_is_evaluated_is_not_lost(tmp_path: Path) -> None:
    net = Network(tmp_path)
    snf = net.participant("skilled_nursing", "1111111111")
    net.credit(snf, SNF_RULE, "2025Q4")
    stale = net.app.ledger_or_new(snf)
    net.credit(snf, SNF_RULE, "2025Q4")  # recorded after `stale` was read
    stale.note_credit(str(uuid4()), SNF_RULE, "12345678A", "2025Q4", D("400.00"), "2024.1")
    with pytest.raises(IntegrityError):  # the store refuses the stale ledger (optimistic concurrency)
        net.app.save(stale)
    [evaluation] = net.close("2025Q4").values()
    assert evaluation.earned == D("800.00")
    assert isinstance(net.app.ledger_or_new(snf), CreditLedger)


def test_a_reversal_that_reaches_the_ledger_before_its_credit_still_withdraws_it(tmp_path: Path) -> None:
    """"A cancel (A11/A12/A13) withdraws the credit of the event it cancels" and "Money never depends on the order in
    which two streams' messages arrive" (DOMAIN.md A3, A4): a credit whose delivery was retried after a conflict can
    reach milestones after its reversal (the fault soak found it: seed 3009 counted a cancelled $400); the credit
    is withdrawn as it is noted, and the close does not count it."""
    net = Network(tmp_path)
    snf = net.participant("skilled_nursing", "1111111111")
    kept = net.credit(snf, SNF_RULE, "2025Q4")
    cancelled = str(uuid4())
    ledger = net.app.ledger_or_new(snf)
    ledger.note_reversal(cancelled)  # the reversal first
    ledger.note_reversal(cancelled)  # redelivered: nothing new
    net.app.save(ledger)
    ledger = net.app.ledger_or_new(snf)
    ledger.note_credit(cancelled, SNF_RULE, "12345678A", "2025Q4", D("400.00"), "2024.1")  # then its credit
    net.app.save(ledger)
    assert set(net.app.ledger_or_new(snf).active(SNF_RULE)) == {kept}
    [evaluation] = net.close("2025Q4").values()
    assert evaluation.earned == D("400.00")


@given(st.lists(st.tuples(st.sampled_from(["credit", "credit", "cancel", "close"]), st.integers(0, 9)), max_size=40))
def test_snf_earnings_over_any_sequence_equal_active_credits_and_no_credit_counts_twice(
        steps: list[tuple[str, int]]) -> None:
    ledger = CreditLedger(uuid4())
    paid = D("0.00")
    counted: list[str] = []
    recovered: list[str] = []
    for step, n in steps:
        if step == "credit":
            ledger.note_credit(f"s{n}", SNF_RULE, "12345678A", "2025Q4", D("400.00"), "r")  # a resend: same id
        elif step == "cancel":
            ledger.note_reversal(f"s{n}")
        else:
            pending = sorted(ledger.active(SNF_RULE, "pending"))
            recover = ledger.to_recover(SNF_RULE)
            outcome = snf_quarter((ledger.credits[s]["amount"] for s in pending),
                                  (ledger.credits[s]["amount"] for s in recover), ledger.carried)
            paid += outcome.earned
            counted.extend(pending)
            recovered.extend(recover)
            ledger.evaluated(evaluation_id=uuid4(), counted=pending, recovered=recover, carried=outcome.carry_forward)
    assert len(counted) == len(set(counted)) and len(recovered) == len(set(recovered)) and set(recovered) <= set(counted)
    # what was paid, less what is still owed back, is $400 for each credit evaluated and not withdrawn since
    assert paid + ledger.carried == D("400.00") * (len(counted) - len(recovered))
    assert ledger.carried <= 0 and paid >= 0


def test_a_correction_of_the_snf_start_date_makes_earlier_quarters_earn(tmp_path: Path) -> None:
    """The program page gives SNF/LTC data sharing as starting "Oct. 1, 2025" while every other row starts the day
    after its Milestone 1 deadline. Shipped as written, a correction effective 2024-10-01 makes an enrolled SNF's
    quarters from 2024Q4 on its data-sharing quarters ("A version published later that is effective earlier (a
    correction) reaches every participant already enrolled")."""
    net = Network(tmp_path)
    snf = net.participant("skilled_nursing", "1111111111")
    net.credit(snf, SNF_RULE, "2024Q4")
    assert net.close("2024Q4") == {}  # under the table as published, 2024Q4 is before data sharing
    correction = amended("2024.2", "2024-10-01", {"provider_types.skilled_nursing.data_sharing_starts": "2024-10-01",
                                                  "provider_types.long_term_care.data_sharing_starts": "2024-10-01"})
    rules = net.app.find(RulesCopy.create_id(), RulesCopy)
    assert rules is not None and rules.note(correction)
    net.app.save(rules)
    net.credit(snf, SNF_RULE, "2025Q1")
    q1 = net.close("2025Q1")[str(snf)]
    assert (q1.earned, q1.rule_version) == (D("800.00"), "2024.2")  # 2025Q1's file and 2024Q4's, late
    assert q1.figures["late_quarters"] == ["2024Q4"]


def test_the_denominator_is_plan_members_attributed_by_the_participants_id_or_any_npi_it_declared(tmp_path: Path) -> None:
    """PCP denominator: "the longitudinal records associated with Alliance Members" — members attributed to the
    participant by its id or by any NPI it has declared (an umbrella group's individual PCPs included), who are
    plan members in the quarter."""
    net = Network(tmp_path)
    group = net.participant("primary_care", "2222222222", individual_npis=["2333333333"])
    net.attribute(str(group).upper(), ["10000001A"], date(2025, 1, 1))  # by participant id
    net.attribute("2222222222", ["10000002A"], date(2025, 1, 1))  # by the group's NPI
    net.attribute("2333333333", ["10000003A"], date(2025, 1, 1))  # by an individual PCP's NPI it declared
    net.attribute("2999999999", ["10000009A"], date(2025, 1, 1))  # another PCP's member: not counted
    net.attribute("2222222222", ["10000004A"], date(2025, 1, 1), member_from=date(2025, 4, 1))  # not a member in Q1
    for member in ("10000001A", "10000002A", "10000003A"):
        net.credit(group, PCP_RULE, "2025Q1", member)
    q1 = net.close("2025Q1")[str(group)]
    assert (q1.figures["attributed_members"], q1.figures["members_with_record"], q1.outcome) == (3, 3, "met")
