"""What qip-share records besides reference data: feed files received, members' QIP assignments and legal bases
(as enrollment and staff state them), the state's data requirements, deliveries and per-member disclosures.

A delivery is rebuilt from these events "as of" the notification position it records (DOMAIN.md Part B)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from qip_share.reference import qip_id


class FeedFile(Aggregate):
    """One feed file, stored once by content hash; its ingest: row counts and every rejected row's line and reason."""

    @staticmethod
    def create_id(kind: str, sha256: str) -> UUID:
        return qip_id(f"feed/{kind}/{sha256}")

    @event("FeedIngested")
    def __init__(self, kind: str, sha256: str, size: int, rows: int, accepted: int, rejected: int,
                 rejects: list[dict[str, Any]], rejects_by_reason: dict[str, int], ignored_columns: list[str],
                 file_problem: str | None, received_at: datetime, received_by: str) -> None:
        self.kind, self.sha256, self.size = kind, sha256, size
        self.rows, self.accepted, self.rejected = rows, accepted, rejected
        self.rejects, self.rejects_by_reason, self.ignored_columns = rejects, rejects_by_reason, ignored_columns
        self.file_problem, self.received_at, self.received_by = file_problem, received_at, received_by

    @property
    def usable(self) -> bool:
        return self.file_problem is None


class QipMember(Aggregate):
    """A member's QIP-entity assignment spans (from enrollment, newest version per start wins) and the legal bases
    recorded for them (e.g. a 42 CFR Part 2 consent), which lift a withholding category of the policy."""

    @staticmethod
    def create_id(cin: str) -> UUID:
        return qip_id(f"member/{cin}")

    @event("MemberNoted")
    def __init__(self, cin: str) -> None:
        self.cin = cin
        self.spans: dict[str, dict[str, Any]] = {}
        self.legal_bases: list[dict[str, Any]] = []

    def note_span(self, start: date, assignee: str, end: date | None, version: int) -> bool:
        known = self.spans.get(start.isoformat())
        if known is not None and known["version"] >= version:
            return False
        self.span_noted(cin=self.cin, start=start, assignee=assignee, end=end, version=version)
        return True

    @event("AssignmentNoted")
    def span_noted(self, cin: str, start: date, assignee: str, end: date | None, version: int) -> None:
        self.spans[start.isoformat()] = {"start": start, "assignee": assignee, "end": end, "version": version}

    @event("LegalBasisRecorded")
    def record_legal_basis(self, cin: str, basis: str, start: date, end: date | None, reference: str,
                           recorded_by: str, recorded_at: datetime) -> None:
        self.legal_bases.append({"basis": basis, "start": start, "end": end, "reference": reference,
                                 "recorded_by": recorded_by, "recorded_at": recorded_at})


class Requirement(Aggregate):
    """A data requirement the state names: which feeds and value sets, for which period, due when — and the data
    window its measures look back over (`data_window_start`/`data_window_end`; each unset bound is the delivery's
    period bound). Requirements defined before the window existed have none: their window is the period."""

    @staticmethod
    def create_id(code: str) -> UUID:
        return qip_id(f"requirement/{code.strip().upper()}")

    @event("RequirementDefined")
    def __init__(self, code: str, title: str, feed_kinds: list[str], value_set_urls: list[str], period_start: date,
                 period_end: date, due_date: date, source: str, data_window_start: date | None = None,
                 data_window_end: date | None = None) -> None:
        self.code, self.title, self.feed_kinds, self.value_set_urls = code, title, feed_kinds, value_set_urls
        self.period_start, self.period_end, self.due_date, self.source = period_start, period_end, due_date, source
        self.data_window_start, self.data_window_end = data_window_start, data_window_end

    def data_window(self, period_start: date, period_end: date) -> tuple[date, date]:
        """The window a delivery for this period reads records in: the requirement's bounds where set, else the
        period's."""
        return self.data_window_start or period_start, self.data_window_end or period_end


class Delivery(Aggregate):
    """One delivery to a QIP entity (and its community partners): everything needed to rebuild it byte for byte.

    `rules_version` names the selection rules it was built under (`qip_share.delivery.RULES_VERSION`); deliveries
    recorded before rules were versioned have none and are rebuilt under the original rules (each record went to
    whoever held the member on its date; the window was the period). `data_window_start`/`data_window_end` bound
    the window records were read in."""

    @staticmethod
    def create_id(entity_id: UUID, requirement: str, period_start: date, period_end: date, position: int) -> UUID:
        return qip_id(f"delivery/{entity_id}/{requirement.upper()}/{period_start}/{period_end}/{position}")

    @event("DeliveryRecorded")
    def __init__(self, entity_id: UUID, entity_name: str, recipients: list[dict[str, Any]], requirement: str,
                 period_start: date, period_end: date, position: int, transaction_time: datetime,
                 feeds: list[dict[str, str]], value_sets: dict[str, str], policy_version: str, purpose: str,
                 legal_basis: str, files: list[dict[str, Any]], manifest: dict[str, Any], totals: dict[str, Any],
                 members: int, scope_digest: str, requested_by: str, due_date: date | None, on_time: bool | None,
                 rules_version: str | None = None, data_window_start: date | None = None,
                 data_window_end: date | None = None) -> None:
        self.entity_id, self.entity_name, self.recipients = entity_id, entity_name, recipients
        self.requirement, self.period_start, self.period_end = requirement, period_start, period_end
        self.position, self.transaction_time, self.feeds = position, transaction_time, feeds
        self.value_sets, self.policy_version, self.purpose, self.legal_basis = value_sets, policy_version, purpose, legal_basis
        self.files, self.manifest, self.totals, self.members = files, manifest, totals, members
        self.scope_digest, self.requested_by, self.due_date, self.on_time = scope_digest, requested_by, due_date, on_time
        self.rules_version = rules_version
        self.data_window_start, self.data_window_end = data_window_start, data_window_end
        self.disclosures_recorded: int | None = None

    @event("DisclosuresRecorded")
    def note_disclosures_recorded(self, members: int) -> None:
        """Every member's Disclosure is saved (until then, a restart completes them)."""
        self.disclosures_recorded = members


class Disclosure(Aggregate):
    """One member's entry in one delivery: the accounting of disclosures (45 CFR 164.528(b)(2) fields and more)."""

    @staticmethod
    def create_id(delivery_id: UUID, cin: str) -> UUID:
        return qip_id(f"disclosure/{delivery_id}/{cin}")

    @event("DisclosureRecorded")
    def __init__(self, cin: str, delivery_id: UUID, disclosed_at: datetime, recipients: list[dict[str, Any]],
                 period_start: date, period_end: date, purpose: str, legal_basis: str, categories: list[str],
                 value_sets: dict[str, str], records: dict[str, int], withheld: dict[str, int],
                 files: dict[str, str]) -> None:
        self.cin, self.delivery_id, self.disclosed_at, self.recipients = cin, delivery_id, disclosed_at, recipients
        self.period_start, self.period_end, self.purpose, self.legal_basis = period_start, period_end, purpose, legal_basis
        self.categories, self.value_sets, self.records, self.withheld, self.files = (
            categories, value_sets, records, withheld, files)


# Member-level facts (CINs) stay in this store; the bus carries feed ingests, requirements and deliveries (no PHI).
for _internal in (QipMember.MemberNoted, QipMember.AssignmentNoted, QipMember.LegalBasisRecorded,  # type: ignore[attr-defined]
                  Disclosure.DisclosureRecorded):  # type: ignore[attr-defined]
    _internal.relay = False
