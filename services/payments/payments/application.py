"""The payments Application."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from dsi_shared.errors import NotFound
from dsi_shared.plantime import Quarter, plan_day
from dsi_shared.rulebook import ProgramTerms, RuleBook, RulesReader
from dsi_shared.store import ServiceApplication
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from payments.domain import ORGANIZATION, HeldForRules, OrganizationLedger, PaymentAccount

EXPORT_COLUMNS = ("participant_id", "legal_name", "npi", "tin", "amount", "payment_id", "quarter", "milestone",
                  "rule_version", "cut_reason")


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")  # OWASP CSV injection: a cell a spreadsheet would evaluate


def spreadsheet_safe(cell: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading single quote (the OWASP
    CSV-injection guard), so `=HYPERLINK(…)` as a legal name is never evaluated by accounts payable's spreadsheet."""
    return f"'{cell}" if cell.startswith(FORMULA_TRIGGERS) else cell


class NoCapInForce(Exception):
    """The rules have not reached payments yet (they travel on another stream): retried, never dropped."""


class Payments(ServiceApplication):
    name = "payments"

    def __init__(self, store_url: str, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(store_url, extra_env)
        self.rules = RulesReader()

    def rulebook(self) -> RuleBook:
        return self.rules.book(self)

    def terms_for(self, quarter: str, book: RuleBook) -> ProgramTerms:
        """The program cap and its scope in force on the quarter's first day (on the program's calendar)."""
        terms = self.terms_if_known(quarter, book)
        if terms is None:
            raise NoCapInForce(f"no program rules in force for {quarter}: no cap to pay under")
        return terms

    @staticmethod
    def terms_if_known(quarter: str, book: RuleBook) -> ProgramTerms | None:
        rules = book.in_force(book.calendar.first_day(Quarter.parse(quarter))) if book.versions else None
        return rules.program if rules else None

    def terms_today(self) -> ProgramTerms | None:
        rules = self.rulebook().in_force(plan_day(datetime.now(UTC)))
        return rules.program if rules else None

    def cap_today(self) -> Decimal | None:
        terms = self.terms_today()
        return terms.cap if terms else None

    def pay(self, participant_id: UUID, milestone: str, earned: Decimal, quarter: str, rule_version: str,
            source_event: str, covers: list[str]) -> list[Aggregate]:
        """Load the facts (the account, its organization's ledger, the terms in force for the quarter), let
        `PaymentAccount.pay` decide, and count the payment in the ledger. Only what this store already holds
        decides: a redelivery or a replay of the same stream order gives the same amount. A payment that cannot be
        decided yet is held, in arrival order, and decided when the fact it waits for arrives — never retried into
        the dead letters (DOMAIN.md A4: money never depends on which stream's message came first): the rules (they
        travel on enrollment's stream; before them there is no cap), or under `organization` the registration that
        names the organization. Under `participation` an unregistered account is paid (and counted in the
        organization's ledger at registration)."""
        account = self.account_or_new(participant_id)
        entry: dict[str, Any] = {"milestone": milestone, "earned": earned, "quarter": quarter,
                                 "rule_version": rule_version, "source_event": source_event, "covers": covers}
        book = self.rulebook()
        if account.held or self._waits_for(account, quarter, book) is not None:  # behind any held before it
            account.hold(**entry)
            return [account, *self._waiting_for_rules(account, book)]
        ledgers: dict[UUID, OrganizationLedger] = {}
        self._decide(account, entry, book, ledgers)
        return [account, *ledgers.values()]

    def _waiting_for_rules(self, account: PaymentAccount, book: RuleBook) -> list[Aggregate]:
        """An account whose first held payment waits for the rules is listed where a rules publication finds it
        (`HeldForRules`), written even when already listed: the write orders this hold with that publication."""
        if not account.held or self._waits_for(account, account.held[0]["quarter"], book) != "rules":
            return []
        waiting = self.held_for_rules()
        waiting.wait(account.participant_id)
        return [waiting]

    def held_for_rules(self) -> HeldForRules:
        """The list of accounts held for rules; made, the first time, from every account holding a payment (stores
        from before the list)."""
        found = self.find(HeldForRules.create_id(), HeldForRules)
        if found is not None:
            return found
        return HeldForRules([str(a.participant_id) for a in self.accounts() if a.held])

    def _waits_for(self, account: PaymentAccount, quarter: str, book: RuleBook) -> str | None:
        """What a payment for `quarter` still waits for: "rules", "registration", or None (it can be decided)."""
        terms = self.terms_if_known(quarter, book)
        if terms is None:
            return "rules"
        if terms.cap_scope == ORGANIZATION and not account.registered:
            return "registration"
        return None

    def _decide(self, account: PaymentAccount, entry: dict[str, Any], book: RuleBook,
                ledgers: dict[UUID, OrganizationLedger]) -> None:
        terms = self.terms_for(entry["quarter"], book)
        if not account.registered:  # participation scope: its own cap; counted in the ledger at registration
            account.pay(**entry, cap=terms.cap, cap_scope=terms.cap_scope)
            return
        organization = account.organization
        ledger = ledgers.get(organization) or self.ledger_or_new(organization)
        ledgers[organization] = ledger
        if account.pay(**entry, cap=terms.cap, cap_scope=terms.cap_scope,
                       paid_elsewhere=ledger.paid_elsewhere(account.participant_id)):
            payment = account.payments[-1]
            ledger.count(account.participant_id, payment["id"], payment["amount"])

    def settle_held(self, account: PaymentAccount, book: RuleBook, ledgers: dict[UUID, OrganizationLedger]) -> None:
        """Decide the account's held payments in the order they arrived, as far as the facts now allow."""
        for held in list(account.held):
            if self._waits_for(account, held["quarter"], book) is not None:
                return
            self._decide(account, held, book, ledgers)

    def register(self, participant_id: UUID, legal_name: str, npi: str | None, tin: str | None,
                 organization_id: UUID | None) -> list[Aggregate]:
        """Record the payee and its organization; payments made before the registration was seen are counted in
        the organization's ledger now, and held ones are decided now, in the order they arrived."""
        account = self.account_or_new(participant_id)
        account.record_payee(legal_name, npi, tin, organization_id)
        ledger = self.ledger_or_new(account.organization)
        for payment in account.payments:
            ledger.count(participant_id, payment["id"], payment["amount"])
        ledgers = {account.organization: ledger}
        book = self.rulebook()
        self.settle_held(account, book, ledgers)
        return [account, *(lg for lg in ledgers.values() if lg.pending_events), *self._waiting_for_rules(account, book)]

    def settle_all_held(self, book: RuleBook, rules_copy_version: int) -> list[Aggregate]:
        """After a rules version arrives: the held payments of every account waiting for rules decided as far as the
        facts now allow; those still waiting for rules stay listed (one waiting for its registration is decided
        when that arrives)."""
        waiting = self.held_for_rules()
        ledgers: dict[UUID, OrganizationLedger] = {}
        changed: list[Aggregate] = []
        still: list[str] = []
        for participant in waiting.accounts:
            account = self.account_or_new(UUID(participant))
            self.settle_held(account, book, ledgers)
            if account.pending_events:
                changed.append(account)
            if account.held and self._waits_for(account, account.held[0]["quarter"], book) == "rules":
                still.append(participant)
        waiting.rules_arrived(rules_copy_version=rules_copy_version, still_waiting=still)
        return [waiting, *changed, *(lg for lg in ledgers.values() if lg.pending_events)]

    def ledger_or_new(self, organization: UUID) -> OrganizationLedger:
        return self.find(OrganizationLedger.create_id(organization), OrganizationLedger) or OrganizationLedger(organization)

    def ledger(self, organization: UUID) -> OrganizationLedger | None:
        return self.find(OrganizationLedger.create_id(organization), OrganizationLedger)

    def account(self, participant_id: UUID) -> PaymentAccount:
        try:
            return self.repository.get(PaymentAccount.create_id(participant_id))
        except AggregateNotFoundError:
            raise NotFound("no payment account for this participant") from None

    def accounts(self) -> list[PaymentAccount]:
        return [self.account_by_id(i) for i in self.ids_created_with(PaymentAccount.PaymentAccountOpened)]  # type: ignore[attr-defined]

    def account_by_id(self, account_id: UUID) -> PaymentAccount:
        found = self.find(account_id, PaymentAccount)
        assert found is not None
        return found

    def export(self, quarter: str) -> str:
        """The accounts-payable file for a quarter: every payment with an amount, in a fixed order, so asking
        again gives the same bytes (until a later payment for that quarter is recorded)."""
        rows = sorted(((account, payment) for account in self.accounts() for payment in account.payments
                       if payment["quarter"] == quarter and payment["amount"] > 0),
                      key=lambda row: (row[0].payee.get("legal_name") or "", str(row[0].participant_id),
                                       row[1]["milestone"], str(row[1]["id"])))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(EXPORT_COLUMNS)
        for account, payment in rows:
            payee = account.payee
            writer.writerow([account.participant_id, spreadsheet_safe(payee.get("legal_name") or ""),
                             spreadsheet_safe(payee.get("npi") or ""), spreadsheet_safe(payee.get("tin") or ""),
                             f"{payment['amount']:.2f}", payment["id"], spreadsheet_safe(payment["quarter"]),
                             spreadsheet_safe(payment["milestone"]), spreadsheet_safe(payment["rule_version"] or ""),
                             spreadsheet_safe(payment["cut_reason"] or "")])
        return out.getvalue()

    def account_or_new(self, participant_id: UUID) -> PaymentAccount:
        try:
            return self.account(participant_id)
        except NotFound:
            return PaymentAccount(participant_id)
