"""The cap's scope (issue 11 §3, applying again; DOMAIN.md A4) as pure rules: `payable`, the organization's ledger,
and the audit's re-derivation under what each payment records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from dsi_shared.audit import AuditContext
from dsi_shared.http import Auth, install_problem_handlers
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from payments.api import routes
from payments.application import Payments
from payments.audit import audit, rederive
from payments.domain import ORGANIZATION, PARTICIPATION, OrganizationLedger, PaymentAccount, payable

from tests.oldevents import rebuilt_without
from tests.rulesdoc import packaged

D = Decimal
CAP = D("15000.00")


def shipped() -> Payments:
    """A payments store holding the shipped rules (cap $40,000, scope organization)."""
    app = Payments("memory://")
    copy = app.rules.copy_in(app)
    copy.note(packaged())
    app.save(copy)
    return app


def test_under_organization_scope_what_the_organization_was_paid_elsewhere_counts_against_the_cap() -> None:
    """"Participants will be eligible to continue earning so long as the maximum of $40,000 has not been reached."
    and: "Whether a later round brings its own Milestone 1 and cap or shares the organization's $40,000 is not
    stated: a rules parameter `cap_scope` (`organization` | `participation`), shipped as `organization` ("up to
    $40,000" offered to a provider)"."""
    assert payable(D("10000.00"), D("0.00"), D("10000.00"), CAP, ORGANIZATION) == D("5000.00")
    assert payable(D("10000.00"), D("0.00"), D("15000.00"), CAP, ORGANIZATION) == D("0.00")
    assert payable(D("400.00"), D("2000.00"), D("12000.00"), CAP, ORGANIZATION) == D("400.00")
    assert payable(D("400.00"), D("2000.00"), D("12800.00"), CAP, ORGANIZATION) == D("200.00")


def test_under_participation_scope_each_participation_has_its_own_cap() -> None:
    """"a rules parameter `cap_scope` (`organization` | `participation`)": under `participation` a later round brings
    its own cap: what the organization was paid
    elsewhere does not count; payments from before the scope was data (None) were capped on their own too."""
    assert payable(D("10000.00"), D("0.00"), D("15000.00"), CAP, PARTICIPATION) == D("10000.00")
    assert payable(D("10000.00"), D("10000.00"), D("15000.00"), CAP, PARTICIPATION) == D("5000.00")
    assert payable(D("10000.00"), D("0.00"), D("15000.00"), CAP, None) == D("10000.00")
    assert payable(D("10000.00"), D("0.00"), None, CAP, ORGANIZATION) == D("10000.00")  # organization not known


amounts = st.decimals(min_value=0, max_value=15000, places=2)


@given(st.lists(st.tuples(st.integers(0, 2), amounts), max_size=30))
def test_an_organization_is_never_paid_past_the_cap_across_its_participations(
        payments: list[tuple[int, Decimal]]) -> None:
    """"Participants will be eligible to continue earning so long as the maximum of $40,000 has not been reached":
    under `organization`, the organization's payments together never pass the cap, and they reach it when earned
    allows."""
    organization = uuid4()
    accounts = [PaymentAccount(uuid4()) for _ in range(3)]
    for account in accounts:
        account.record_payee("Org", None, None, organization)
    ledger = OrganizationLedger(organization)
    for n, (which, earned) in enumerate(payments):
        account = accounts[which]
        account.pay(f"M{n}", earned, "2025Q1", "r1", source_event=str(n), cap=CAP, cap_scope=ORGANIZATION,
                    paid_elsewhere=ledger.paid_elsewhere(account.participant_id))
        ledger.count(account.participant_id, account.payments[-1]["id"], account.payments[-1]["amount"])
        assert ledger.total_paid == sum((a.total_paid for a in accounts), D("0")) <= CAP
    assert ledger.total_paid == min(CAP, sum((e for _, e in payments), D("0")))


def test_each_payment_records_its_scope_and_what_the_organization_had_been_paid_elsewhere() -> None:
    organization = uuid4()
    later_round = PaymentAccount(uuid4())
    later_round.record_payee("Org", "1234567893", None, organization)
    later_round.pay("M1", D("10000.00"), "2025Q1", "r2", source_event="e", cap=CAP, cap_scope=ORGANIZATION,
                    paid_elsewhere=D("10000.00"))
    payment = later_round.payments[0]
    assert (payment["amount"], payment["cut_reason"], payment["cap_scope"], payment["organization_id"],
            payment["organization_paid_elsewhere"]) == (D("5000.00"), "cut to the $15,000.00 cap", ORGANIZATION,
                                                        organization, D("10000.00"))
    assert rederive({"M1": D("10000.00")}, CAP, later_round.payments) == D("5000.00")


def test_a_payment_under_the_organization_scope_is_held_until_the_registration_names_the_organization() -> None:
    """Money never depends on which stream's message arrived first (DOMAIN.md A4): without the registration,
    payments cannot know the organization, so the milestone is held (not paid on a cap of its own, not dropped)
    and decided when the registration arrives."""
    app = shipped()
    first, later = uuid4(), uuid4()
    app.save(*app.pay(later, "M1", D("30000.00"), "2025Q1", "r1", "b", covers=["agreement:x"]))
    app.save(*app.pay(later, "M1", D("30000.00"), "2025Q1", "r1", "b", covers=["agreement:x"]))  # redelivered
    assert ([h["milestone"] for h in app.account(later).held], app.account(later).payments) == (["M1"], [])
    app.save(*app.register(first, "Org", "1234567893", None, None))
    app.save(*app.pay(first, "M1", D("30000.00"), "2025Q1", "r1", "a", covers=[]))
    app.save(*app.register(later, "Org", "1234567893", None, first))
    cap = D(packaged()["program"]["cap"])
    account = app.account(later)
    assert (account.held, account.total_paid, account.payments[0]["organization_paid_elsewhere"]) == (
        [], cap - D("30000.00"), D("30000.00"))
    ledger = app.ledger(first)
    assert ledger is not None and ledger.total_paid == cap


def test_payments_and_payees_stored_before_the_scope_existed_still_load() -> None:
    """eventsourcing rebuilds events from stored kwargs: a PayeeRecorded without `organization_id` and a PaymentIssued
    without `cap_scope`/`organization_id`/`organization_paid_elsewhere` load as a participation of its own."""
    app = Payments("memory://")
    account = PaymentAccount(uuid4())
    account.record_payee("Old", None, None)
    account.pay("M1", D("10000.00"), "2024Q2", "r1", source_event="e", cap=CAP)
    rebuilt = rebuilt_without(app, account, ("organization_id", "cap_scope", "organization_paid_elsewhere"))
    assert isinstance(rebuilt, PaymentAccount)
    assert (rebuilt.organization, rebuilt.payments[0]["cap_scope"], rebuilt.total_paid) == (
        rebuilt.participant_id, None, D("10000.00"))
    assert rederive({"M1": D("10000.00")}, CAP, rebuilt.payments) == D("10000.00")


def organization_paid(app: Payments, second_elsewhere: Decimal | None = None) -> tuple[str, str]:
    """An organization's first participation paid $30,000, then its later round's Milestone 1 (cut under the shipped
    `organization` scope), in one store; `second_elsewhere` records another figure for what was paid elsewhere."""
    first, later = uuid4(), uuid4()
    app.save(*app.register(first, "Org", "1234567893", None, None))
    app.save(*app.pay(first, "M1", D("30000.00"), "2025Q1", "r1", "a", covers=[]))
    app.save(*app.register(later, "Org", "1234567893", None, first))
    if second_elsewhere is None:
        app.save(*app.pay(later, "M1", D("30000.00"), "2025Q1", "r1", "b", covers=[]))
    else:  # a payment decided on a wrong figure, as a faulty writer would record it
        account = app.account(later)
        account.pay("M1", D("30000.00"), "2025Q1", "r1", "b", cap=D("40000.00"), cap_scope=ORGANIZATION,
                    paid_elsewhere=second_elsewhere)
        app.save(account)
    return str(first), str(later)


def test_the_audit_re_derives_a_later_rounds_cut_payment_and_flags_a_wrong_figure_for_what_was_paid_elsewhere() -> None:
    """`dsi audit replay` re-derives every payout under the scope and the organization's payments elsewhere that each
    payment records, and checks that figure against the organization's payments before it in the log."""
    app = shipped()
    first, later = organization_paid(app)
    achieved = {first: {"M1": D("30000.00")}, later: {"M1": D("30000.00")}}
    report = audit(app, AuditContext(achieved=achieved))
    assert report.problems == []
    assert (report.rows[first]["total_paid"], report.rows[later]["total_paid"]) == ("30000.00", "10000.00")

    wrong = shipped()
    first, later = organization_paid(wrong, second_elsewhere=D("0.00"))
    report = audit(wrong, AuditContext(achieved={first: {"M1": D("30000.00")}, later: {"M1": D("30000.00")}}))
    assert report.problems == [f"payments: {later} M1 records 0.00 paid elsewhere in its organization, the log's "
                               "payments before it sum to 30000.00"]


def test_the_statement_shows_the_organizations_total_and_headroom_and_what_is_held() -> None:
    """Under `organization` the statement shows what the organization was paid and may still be paid; a payment
    waiting for its registration is shown as held."""
    app = shipped()
    first, later = organization_paid(app)
    waiting = uuid4()
    app.save(*app.pay(waiting, "M1", D("10000.00"), "2025Q1", "r1", "w", covers=[]))
    http = FastAPI()
    install_problem_handlers(http)
    http.include_router(routes(app, Auth({"staff": "program-staff"})))
    with TestClient(http) as client:
        shown = client.get(f"/participants/{later}/payments", headers={"Authorization": "Bearer staff"}).json()
        held = client.get(f"/participants/{waiting}/payments", headers={"Authorization": "Bearer staff"}).json()
    assert (shown["cap_scope"], shown["organization_id"], shown["total_paid"], shown["organization_total_paid"],
            shown["organization_remaining"], shown["remaining"]) == (
        "organization", first, "10000.00", "40000.00", "0.00", "0.00")
    assert (held["held"], held["payments"]) == ([{"milestone": "M1", "quarter": "2025Q1", "earned": "10000.00"}], [])


def test_a_payment_that_arrives_before_any_rules_is_held_and_paid_when_the_rules_arrive() -> None:
    """"Money never depends on the order in which two streams' messages arrive" (DOMAIN.md A4): the rules travel on
    enrollment's stream, the milestone on milestones'. Before any rules version has reached payments there is no
    cap to pay under: the milestone is held (never retried into the dead letters, as a NATS leader's failover
    once made it) and paid, in the order held, when the rules arrive."""
    from payments.handlers import SUBSCRIPTIONS

    from tests.harness import deliver_event

    app = Payments("memory://")
    participant = uuid4()
    app.save(*app.register(participant, "Org", "1234567893", None, None))
    app.save(*app.pay(participant, "M1", D("10000.00"), "2024Q2", "2024.1", "m1", covers=["agreement:x"]))
    app.save(*app.pay(participant, "SNF:2025Q4", D("400.00"), "2025Q4", "2024.1", "q", covers=["submission:s"]))
    account = app.account(participant)
    assert ([h["milestone"] for h in account.held], account.payments) == (["M1", "SNF:2025Q4"], [])
    app.save(*deliver_event(app, SUBSCRIPTIONS, "dsi.enrollment.rules-published",
                            {"aggregate_id": str(uuid4()), "aggregate_version": 1, "document": packaged(),
                             "reason": "the program's rules"}, event_id="enrollment:1", source="enrollment"))
    account = app.account(participant)
    assert (account.held, [(p["milestone"], p["amount"]) for p in account.payments]) == (
        [], [("M1", D("10000.00")), ("SNF:2025Q4", D("400.00"))])
    ledger = app.ledger(participant)
    assert ledger is not None and ledger.total_paid == D("10400.00")


def test_a_payment_held_while_another_consumer_records_the_rules_is_decided_again_not_held_for_ever() -> None:
    """The milestones consumer decides to hold a payment (no rules yet) while the enrollment consumer — another
    thread, or another replica — records the rules and settles what it finds held (nothing yet). Saving the hold
    then conflicts (both wrote the list of accounts held for rules), so the payment is decided again and paid; it
    used to stay held until the next rules publication (a two-replica test under load caught it)."""
    from eventsourcing.persistence import IntegrityError
    from payments.handlers import SUBSCRIPTIONS

    from tests.harness import deliver_event

    app = Payments("memory://")
    participant = uuid4()
    app.save(*app.register(participant, "Org", "1234567893", None, None))

    def milestone1() -> list[Any]:
        return app.pay(participant, "M1", D("10000.00"), "2024Q2", "2024.1", "m1", covers=["agreement:x"])

    hold = milestone1()  # decided before the rules were there; not saved yet
    assert [h["milestone"] for h in hold[0].held] == ["M1"]
    app.save(*deliver_event(app, SUBSCRIPTIONS, "dsi.enrollment.rules-published",
                            {"aggregate_id": str(uuid4()), "aggregate_version": 1, "document": packaged(),
                             "reason": "the program's rules"}, event_id="enrollment:1", source="enrollment"))
    with pytest.raises(IntegrityError):
        app.save(*hold)  # the consumer's save meets the conflict ...
    app.save(*milestone1())  # ... and decides again from what is stored now
    account = app.account(participant)
    assert (account.held, [(p["milestone"], p["amount"]) for p in account.payments]) == ([], [("M1", D("10000.00"))])
