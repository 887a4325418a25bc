"""The qip-share Application: QIP reference data (entities, value-set versions, the sensitivity policy, the state's
data requirements), feed files, members' assignments and legal bases, and deliveries with their per-member
disclosures — in its own event store. Code lists, feeds and delivery files are bulk data: kept once by hash beside
the events (`dsi_shared.blobs`, `dsi_shared.files`), feeds and deliveries encrypted."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, deque
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from dsi_shared.blobs import Blob, BlobStore
from dsi_shared.cipher import PayloadCipher
from dsi_shared.errors import NotFound, PermanentError, Unprocessable
from dsi_shared.files import FileStore, FileWriter, StoredFile
from dsi_shared.members import Span
from dsi_shared.occ import retry_on_conflict
from dsi_shared.plantime import plan_day
from dsi_shared.store import ServiceApplication
from eventsourcing.persistence import IntegrityError

from qip_share.delivery import RULES_VERSION, DeliveryPlan, DeliveryResult, LegalBasis, MemberScope, build_delivery
from qip_share.feeds import FEED_KINDS, BadHeader, RowError, ignored_columns, is_ndjson, read_feed
from qip_share.ledger import Delivery, Disclosure, FeedFile, QipMember, Requirement
from qip_share.policy import check_policy, shipped_policies
from qip_share.reference import (
    ENTITY_KINDS,
    QipEntity,
    SensitivityPolicy,
    ValueSetCatalog,
    ValueSetVersion,
    codes_digest,
)
from qip_share.valuesets import ParseReport

log = logging.getLogger(__name__)


class Conflict(PermanentError):
    pass


class InvalidPeriod(Unprocessable):
    """An end before its start: the input is wrong, not in conflict with anything stored (422)."""


class QipShare(ServiceApplication):
    name = "qipshare"  # stored: prefixes its tables (qipshare_events, _chain, _blobs); the service is `qip-share`

    def __init__(self, store_url: str, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(store_url, extra_env)
        self.blobs = BlobStore(self)
        self._files: FileStore | None = None  # made on first use: the payload key is needed only for feeds

    # -- entities --------------------------------------------------------------------------------------------
    def register_entity(self, kind: str, name: str, identifiers: dict[str, str], address: str, endpoint: str,
                        community_partners: list[dict[str, Any]], participating: bool = True) -> QipEntity:
        return retry_on_conflict(lambda: self._register_entity(kind, name, identifiers, address, endpoint,
                                                               community_partners, participating), "the QIP entity")

    def _register_entity(self, kind: str, name: str, identifiers: dict[str, str], address: str, endpoint: str,
                         community_partners: list[dict[str, Any]], participating: bool) -> QipEntity:
        if kind not in ENTITY_KINDS:
            raise Conflict(f"kind must be one of {', '.join(ENTITY_KINDS)}")
        if community_partners and kind != "DMPH":
            raise Conflict("only a DMPH has state-approved community partners")
        if not identifiers:
            raise Conflict("at least one identifier is required")
        if self.find(QipEntity.create_id(kind, identifiers), QipEntity) is not None:
            raise Conflict("an entity with this identifier is already registered")
        entity = QipEntity(kind, name, identifiers, address, endpoint, community_partners, participating)
        self.save(entity)
        return entity

    def record_participation(self, entity_id: UUID, participating: bool, reason: str, recorded_by: str,
                             now: datetime) -> tuple[QipEntity, bool]:
        """Whether the state lists the entity as a participating DPH/DMPH system (only participants receive data)."""

        def attempt() -> tuple[QipEntity, bool]:
            entity = self.entity(entity_id)
            changed = entity.change_participation(participating, reason, recorded_by, now)
            if changed:
                self.save(entity)
            return entity, changed

        return retry_on_conflict(attempt, "the QIP entity")

    def entity(self, entity_id: UUID) -> QipEntity:
        return self.get(entity_id, QipEntity, "QIP entity")

    def entities(self) -> list[QipEntity]:
        return [self.entity(i) for i in self.ids_created_with(QipEntity.EntityRegistered)]  # type: ignore[attr-defined]

    # -- value sets ------------------------------------------------------------------------------------------
    def catalog(self) -> ValueSetCatalog:
        return self.find(ValueSetCatalog.create_id(), ValueSetCatalog) or ValueSetCatalog()

    def value_set(self, url: str, version: str) -> ValueSetVersion:
        return self.get(ValueSetVersion.create_id(url, version), ValueSetVersion, "value set version")

    def codes_of(self, version: ValueSetVersion) -> set[tuple[str, str]]:
        blob = self.blobs.get(version.digest)
        if blob is None:
            raise NotFound("the value set's code list is missing from the blob table")
        return {(system, code) for system, code in json.loads(blob.data)}

    def publish_value_sets(self, report: ParseReport, source: str, now: datetime) -> list[dict[str, Any]]:
        """Each parsed value set becomes a new version (current from now on); the same version with the same codes
        again is no change; the same version with other codes is refused — versions are never rewritten."""
        return retry_on_conflict(lambda: self._publish_value_sets(report, source, now), "the value set catalog")

    def _publish_value_sets(self, report: ParseReport, source: str, now: datetime) -> list[dict[str, Any]]:
        catalog, changed, results = self.catalog(), [], []
        for parsed in report.value_sets:
            codes = sorted([system, code] for system, code in parsed.codes)
            digest = codes_digest(codes)
            known = self.find(ValueSetVersion.create_id(parsed.url, parsed.version), ValueSetVersion)
            if known is not None:
                if known.digest != digest:
                    raise Conflict(f"value set {parsed.url} version {parsed.version} exists with other codes: "
                                   "publish it as a new version")
                results.append({"url": parsed.url, "version": parsed.version, "codes": len(codes), "status": "unchanged"})
                continue
            self.blobs.put(Blob(digest, len(codes), "application/json", "", json.dumps(codes, separators=(",", ":")).encode()))
            version = ValueSetVersion(parsed.url, parsed.name, parsed.version, len(codes), digest, source, now)
            catalog.adopt(parsed.url, parsed.name, parsed.version, now)
            changed.append(version)
            results.append({"url": parsed.url, "version": parsed.version, "codes": len(codes), "status": "published"})
        if changed:
            self.save(catalog, *changed)
        return results

    # -- sensitivity policy ----------------------------------------------------------------------------------
    def policy(self) -> SensitivityPolicy:
        found = self.find(SensitivityPolicy.create_id(), SensitivityPolicy)
        if found is None:
            raise NotFound("no sensitivity policy published yet")
        return found

    def publish_policy(self, document: dict[str, Any], reason: str) -> bool:
        canonical = check_policy(document)
        return retry_on_conflict(lambda: self._publish_policy(canonical, reason), "the sensitivity policy")

    def _publish_policy(self, canonical: dict[str, Any], reason: str) -> bool:
        policy = self.find(SensitivityPolicy.create_id(), SensitivityPolicy) or SensitivityPolicy()
        try:
            changed = policy.publish(canonical["version"], canonical, reason)
        except ValueError as exc:
            raise Conflict(str(exc)) from None
        if changed:
            self.save(policy)
        return changed

    def ensure_default_policy(self) -> list[str]:
        """Run at start. A fresh store publishes the newest version shipped in `sensitivity_policy.json`; a store
        whose current version is an older shipped one publishes each newer shipped version it lacks, oldest first
        (a store holding 2025.1 gains 2026.1 as its current version and keeps 2025.1, as stored, for the deliveries
        recorded under it). A store whose current version staff published (not a shipped one) keeps it current: the
        shipped version is left for staff to adopt. Returns the versions published."""
        shipped = shipped_policies()
        names = [document["version"] for document in shipped]
        policy = self.find(SensitivityPolicy.create_id(), SensitivityPolicy)
        if policy is None:
            self.publish_policy(shipped[-1], f"shipped policy {names[-1]} (DOMAIN.md Part B)")
            return [names[-1]]
        if policy.current_version not in names:
            log.warning("shipped sensitivity policy versions not adopted: the current version was published by staff")
            return []
        published: list[str] = []
        for document in shipped[names.index(policy.current_version) + 1:]:
            if document["version"] not in policy.versions and self.publish_policy(
                    document, f"shipped policy {document['version']} (DOMAIN.md Part B)"):
                published.append(document["version"])
        return published

    # -- feeds -----------------------------------------------------------------------------------------------
    @property
    def files(self) -> FileStore:
        if self._files is None:
            self._files = FileStore(self.blobs, PayloadCipher())
        return self._files

    def ingest_feed(self, kind_name: str, stored: StoredFile, received_by: str, now: datetime) -> tuple[FeedFile, bool]:
        """Check every row of a stored feed file and record its ingest once (the same file again: no change)."""
        kind = FEED_KINDS[kind_name]
        known = self.find(FeedFile.create_id(kind_name, stored.sha256), FeedFile)
        if known is not None:
            return known, False
        accepted, rejects, by_reason, ignored, problem = 0, list[dict[str, Any]](), Counter[str](), list[str](), None
        try:
            with self.files.open(stored.sha256) as stream:
                for item in read_feed(kind, stream):
                    if isinstance(item, RowError):
                        by_reason[item.reason] += 1
                        if len(rejects) < MAX_LISTED_REJECTS:
                            rejects.append({"line": item.line, "reason": item.reason})
                    else:
                        accepted += 1
            with self.files.open(stored.sha256) as stream:
                ignored = [] if is_ndjson(stream) else ignored_columns(kind, stream)
        except BadHeader as exc:
            problem = str(exc)
        rejected = sum(by_reason.values())
        feed = FeedFile(kind_name, stored.sha256, stored.size, accepted + rejected, accepted, rejected, rejects,
                        dict(sorted(by_reason.items())), ignored, problem, now, received_by)
        self.save(feed)
        return feed, True

    def feeds(self) -> list[FeedFile]:
        return [f for i in self.ids_created_with(FeedFile.FeedIngested)  # type: ignore[attr-defined]
                if (f := self.find(i, FeedFile)) is not None]

    # -- members: assignments (from enrollment) and legal bases (from staff) -------------------------------
    def member_or_new(self, cin: str) -> QipMember:
        return self.find(QipMember.create_id(cin), QipMember) or QipMember(cin)

    def record_legal_basis(self, cin: str, basis: str, start: date, end: date | None, reference: str,
                           recorded_by: str, now: datetime) -> QipMember:
        permitted = {b for c in self.policy().current["categories"].values() for b in c.get("legal_bases_that_permit", [])}
        if basis not in permitted:
            raise Conflict(f"basis must be one the sensitivity policy names: {', '.join(sorted(permitted))}")
        if end is not None and end < start:
            raise InvalidPeriod("end is before start")

        def attempt() -> QipMember:
            member = self.member_or_new(cin)
            member.record_legal_basis(cin=cin, basis=basis, start=start, end=end, reference=reference,
                                      recorded_by=recorded_by, recorded_at=now)
            self.save(member)
            return member

        return retry_on_conflict(attempt, "the member's legal bases")

    def members_as_of(self, entity_keys: frozenset[str], position: int) -> dict[str, MemberScope]:
        """Every member ever assigned to the entity by `position`, with all their QIP spans and legal bases as the
        log stood then (two passes over the log, so memory grows with the entity's members, not the plan's)."""
        ours = {e.cin for e in self.events_of(QipMember.AssignmentNoted, upto=position)  # type: ignore[attr-defined]
                if e.assignee.strip().upper() in entity_keys}
        spans: dict[str, dict[date, Span]] = {}
        bases: dict[str, list[LegalBasis]] = {}
        for e in self.events_of(QipMember.AssignmentNoted, QipMember.LegalBasisRecorded, upto=position):  # type: ignore[attr-defined]
            if e.cin not in ours:
                continue
            if isinstance(e, QipMember.LegalBasisRecorded):  # type: ignore[attr-defined]
                bases.setdefault(e.cin, []).append((e.basis, e.start, e.end))
            else:
                spans.setdefault(e.cin, {})[e.start] = (e.start, e.end, e.assignee)
        return {cin: MemberScope(tuple(spans[cin].values()), tuple(bases.get(cin, ()))) for cin in ours}

    # -- requirements ----------------------------------------------------------------------------------------
    def define_requirement(self, code: str, title: str, feed_kinds: list[str], value_set_urls: list[str],
                           period_start: date, period_end: date, due_date: date, source: str,
                           data_window_start: date | None = None,
                           data_window_end: date | None = None) -> tuple[Requirement, bool]:
        unknown = [k for k in feed_kinds if k not in FEED_KINDS]
        if unknown:
            raise Conflict(f"unknown feed kind(s): {', '.join(unknown)}")
        if period_end < period_start:
            raise InvalidPeriod("period_end is before period_start")
        if (data_window_end or period_end) < (data_window_start or period_start):
            raise InvalidPeriod("the data window ends before it starts")
        return retry_on_conflict(lambda: self._define_requirement(
            code, title, feed_kinds, value_set_urls, period_start, period_end, due_date, source, data_window_start,
            data_window_end), "the requirement")

    def _define_requirement(self, code: str, title: str, feed_kinds: list[str], value_set_urls: list[str],
                            period_start: date, period_end: date, due_date: date, source: str,
                            data_window_start: date | None, data_window_end: date | None) -> tuple[Requirement, bool]:
        catalog = self.catalog()
        if missing := [u for u in value_set_urls if u not in catalog.current]:
            raise Conflict(f"{len(missing)} value set url(s) not published yet")
        kinds, urls = sorted(feed_kinds or FEED_KINDS), sorted(value_set_urls)
        known = self.find(Requirement.create_id(code), Requirement)
        if known is not None:
            same = (known.title, known.feed_kinds, known.value_set_urls, known.period_start, known.period_end,
                    known.due_date, known.data_window_start, known.data_window_end) == (
                title, kinds, urls, period_start, period_end, due_date, data_window_start, data_window_end)
            if not same:
                raise Conflict(f"requirement {code} exists with other content: name the new one differently")
            return known, False
        requirement = Requirement(code, title, kinds, urls, period_start, period_end, due_date, source,
                                  data_window_start, data_window_end)
        self.save(requirement)
        return requirement, True

    def requirement(self, code: str) -> Requirement:
        return self.get(Requirement.create_id(code), Requirement, "requirement")

    def requirements(self) -> list[Requirement]:
        return [r for i in self.ids_created_with(Requirement.RequirementDefined)  # type: ignore[attr-defined]
                if (r := self.find(i, Requirement)) is not None]

    # -- deliveries ------------------------------------------------------------------------------------------
    def delivery(self, delivery_id: UUID) -> Delivery:
        return self.get(delivery_id, Delivery, "delivery")

    def deliveries(self) -> list[Delivery]:
        return [d for i in self.ids_created_with(Delivery.DeliveryRecorded)  # type: ignore[attr-defined]
                if (d := self.find(i, Delivery)) is not None]

    def delivery_request(self, entity_id: UUID, requirement_code: str, period_start: date | None,
                         period_end: date | None) -> DeliveryRequest:
        """What a delivery asked now would cover, pinned to the current end of the log."""
        entity, requirement = self.entity(entity_id), self.requirement(requirement_code)
        if not entity.participating:  # refused before anything is recorded
            raise Conflict("the QIP entity is not a participating DPH/DMPH system: only participants receive data")
        start, end = period_start or requirement.period_start, period_end or requirement.period_end
        if end < start:
            raise InvalidPeriod("period end is before its start")
        window_start, window_end = requirement.data_window(start, end)
        if window_end < window_start:
            raise InvalidPeriod("the requirement's data window ends before it starts for this period")
        position = self.recorder.max_notification_id() or 0
        return DeliveryRequest(Delivery.create_id(entity.id, requirement.code, start, end, position), entity,
                               requirement, start, end, position)

    def deliver(self, request: DeliveryRequest, requested_by: str, now: datetime) -> Delivery:
        """Build the delivery as of its position, store its files, record it and every member's disclosure."""
        known = self.find(request.delivery_id, Delivery)
        if known is not None:
            return known
        value_sets = self._value_sets_as_of(request.requirement, request.position)
        policy_version, policy = self._policy_as_of(request.position)
        recipients = request.entity.recipients
        window = request.requirement.data_window(request.period_start, request.period_end)
        fixed = _manifest_fixed(request.delivery_id, request.entity.id, request.entity.name, recipients,
                                request.requirement.code, request.period_start, request.period_end, now, value_sets,
                                policy_version)
        plan = DeliveryPlan(str(request.delivery_id), entity_keys(request.entity), request.period_start,
                            request.period_end, self._feeds_as_of(request.position),
                            frozenset(request.requirement.feed_kinds), self._codes(value_sets), policy,
                            self.members_as_of(entity_keys(request.entity), request.position), fixed,
                            RULES_VERSION, window)
        writers: dict[str, FileWriter] = {}
        result = build_delivery(plan, self.files.open, lambda t: _StoredSink(writers.setdefault(t, self.files.writer(NDJSON))))
        manifest_file = self.files.put(result.manifest_bytes, "application/json")
        due = request.requirement.due_date
        delivery = Delivery(request.entity.id, request.entity.name, recipients, request.requirement.code,
                            request.period_start, request.period_end, request.position, now,
                            [{"kind": k, "sha256": h} for k, h in plan.feeds], value_sets, policy_version,
                            PURPOSE, LEGAL_BASIS, result.files, {"sha256": manifest_file.sha256, "size": manifest_file.size},
                            result.totals, len(result.members), result.manifest["extension"]["scope_sha256"],
                            requested_by, due, plan_day(now) <= due, RULES_VERSION, *window)
        assert delivery.id == request.delivery_id
        try:
            self.save(delivery)
        except IntegrityError:  # another replica built the same delivery (same inputs, same bytes) and recorded it
            delivery = self.delivery(request.delivery_id)
        self._record_disclosures(delivery, result)
        return self.delivery(request.delivery_id)

    def complete_interrupted_deliveries(self) -> int:
        """Deliveries recorded whose per-member disclosures were not all saved (the process stopped midway):
        rebuild each (as a reproduction does) and save the missing disclosures. Run at start."""
        resumed = 0
        for delivery in self.deliveries():
            if delivery.disclosures_recorded is None:
                self._record_disclosures(delivery, self._rebuild(delivery)[0])
                resumed += 1
        return resumed

    def _record_disclosures(self, delivery: Delivery, result: DeliveryResult, batch: int = 500) -> None:
        """One Disclosure per member in the delivery, saved in batches, then the delivery marked complete; a batch
        that partly exists (a resumed delivery) saves only what is missing."""
        files = {f["type"]: f["sha256"] for f in delivery.files}
        pending: list[Disclosure] = []
        for cin in sorted(result.members):
            tally = result.members[cin]
            pending.append(Disclosure(
                cin, delivery.id, delivery.transaction_time, delivery.recipients, delivery.period_start,
                delivery.period_end, delivery.purpose, delivery.legal_basis, sorted(tally.kinds), delivery.value_sets,
                dict(sorted(tally.records.items())), dict(sorted(tally.withheld.items())),
                {t: files[t] for t in sorted(tally.records)}))
            if len(pending) >= batch:
                self._save_missing(pending)
                pending = []
        self._save_missing(pending)
        if delivery.disclosures_recorded is None:
            delivery.note_disclosures_recorded(len(result.members))
            try:
                self.save(delivery)
            except IntegrityError:  # another replica completed the same delivery first
                pass

    def _save_missing(self, disclosures: list[Disclosure]) -> None:
        try:
            self.save(*disclosures)
        except IntegrityError:
            self.save(*(d for d in disclosures if self.find(d.id, Disclosure) is None))

    def disclosures_of(self, cin: str) -> list[Disclosure]:
        """The member's accounting of disclosures, oldest first."""
        found = [d for delivery_id in self.ids_created_with(Delivery.DeliveryRecorded)  # type: ignore[attr-defined]
                 if (d := self.find(Disclosure.create_id(delivery_id, cin), Disclosure)) is not None]
        return sorted(found, key=lambda d: d.disclosed_at)

    def reproduce(self, delivery_id: UUID) -> Reproduction:
        """Rebuild a past delivery from the event log as of its position and the stored feeds, with the value-set
        and policy versions it recorded, and compare every hash."""
        delivery = self.delivery(delivery_id)
        result, feeds = self._rebuild(delivery)
        problems = []
        if [{"kind": k, "sha256": h} for k, h in feeds] != delivery.feeds:
            problems.append("the feeds ingested by the delivery's position differ from the feeds it recorded")
        rebuilt = {f["type"]: f["sha256"] for f in result.files}
        recorded = {f["type"]: f["sha256"] for f in delivery.files}
        for resource_type in sorted(set(rebuilt) | set(recorded)):
            if rebuilt.get(resource_type) != recorded.get(resource_type):
                problems.append(f"{resource_type}.ndjson: recorded {recorded.get(resource_type, 'none')[:12]}, "
                                f"rebuilt {rebuilt.get(resource_type, 'none')[:12]}")
        manifest_sha256 = hashlib.sha256(result.manifest_bytes).hexdigest()
        if manifest_sha256 != delivery.manifest["sha256"]:
            problems.append("manifest: rebuilt bytes differ from the recorded manifest")
        if self._value_sets_as_of(self.requirement(delivery.requirement), delivery.position) != delivery.value_sets:
            problems.append("the value-set versions current at the delivery's position differ from those it recorded")
        if self._policy_as_of(delivery.position)[0] != delivery.policy_version:
            problems.append("the policy version current at the delivery's position differs from the one it recorded")
        if delivery.rules_version is not None and self.requirement(delivery.requirement).data_window(
                delivery.period_start, delivery.period_end) != (delivery.data_window_start, delivery.data_window_end):
            problems.append("the requirement's data window differs from the one the delivery recorded")
        if result.manifest["extension"]["scope_sha256"] != delivery.scope_digest:
            problems.append("the members in scope rebuilt from the log differ from those recorded")
        return Reproduction(delivery, [{"type": t, "recorded": recorded.get(t), "rebuilt": rebuilt.get(t)}
                                       for t in sorted(set(rebuilt) | set(recorded))],
                            manifest_sha256, problems)

    def _rebuild(self, delivery: Delivery) -> tuple[DeliveryResult, tuple[tuple[str, str], ...]]:
        """The delivery built again, bytes hashed not stored, from the log as of its position and the value-set and
        policy versions it recorded."""
        entity = self.entity(delivery.entity_id)
        keys = entity_keys(entity)
        feeds = self._feeds_as_of(delivery.position)
        fixed = _manifest_fixed(delivery.id, entity.id, delivery.entity_name, delivery.recipients, delivery.requirement,
                                delivery.period_start, delivery.period_end, delivery.transaction_time,
                                delivery.value_sets, delivery.policy_version)
        window = None
        if delivery.data_window_start is not None and delivery.data_window_end is not None:
            window = (delivery.data_window_start, delivery.data_window_end)
        plan = DeliveryPlan(str(delivery.id), keys, delivery.period_start, delivery.period_end, feeds,
                            frozenset(self.requirement(delivery.requirement).feed_kinds), self._codes(delivery.value_sets),
                            self.policy().versions[delivery.policy_version], self.members_as_of(keys, delivery.position),
                            fixed, delivery.rules_version, window)
        return build_delivery(plan, self.files.open, lambda _: _HashSink()), feeds

    def _value_sets_as_of(self, requirement: Requirement, position: int) -> dict[str, str]:
        current: dict[str, str] = {}
        for adopted in self.events_of(ValueSetCatalog.ValueSetVersionAdopted, upto=position):  # type: ignore[attr-defined]
            current[adopted.url] = adopted.version
        urls = requirement.value_set_urls or sorted(current)
        if missing := [u for u in urls if u not in current]:
            raise Conflict(f"{len(missing)} value set(s) the requirement names were not published by then")
        return {url: current[url] for url in urls}

    def _policy_as_of(self, position: int) -> tuple[str, dict[str, Any]]:
        latest = deque(self.events_of(SensitivityPolicy.PolicyPublished, upto=position), maxlen=1)  # type: ignore[attr-defined]
        if not latest:
            raise NotFound("no sensitivity policy published yet")
        return latest[0].version, latest[0].document

    def _feeds_as_of(self, position: int) -> tuple[tuple[str, str], ...]:
        return tuple((e.kind, e.sha256) for e in self.events_of(FeedFile.FeedIngested, upto=position)  # type: ignore[attr-defined]
                     if e.file_problem is None)

    def _codes(self, value_sets: dict[str, str]) -> frozenset[tuple[str, str]]:
        codes: set[tuple[str, str]] = set()
        for url, version in value_sets.items():
            codes |= self.codes_of(self.value_set(url, version))
        return frozenset(codes)


PURPOSE = "quality assessment and improvement by the QIP entity (QIP data sharing; health care operations)"
LEGAL_BASIS = "45 CFR 164.506(c)(4); routine disclosure protocol 164.514(d)(3) (QIP value sets)"
NDJSON = "application/fhir+ndjson"
MAX_LISTED_REJECTS = 1000


@dataclass(frozen=True)
class DeliveryRequest:
    delivery_id: UUID
    entity: QipEntity
    requirement: Requirement
    period_start: date
    period_end: date
    position: int


@dataclass(frozen=True)
class Reproduction:
    delivery: Delivery
    files: list[dict[str, str | None]]
    manifest_sha256: str
    problems: list[str]


def entity_keys(entity: QipEntity) -> frozenset[str]:
    """How enrollment may name the entity as a member's QIP assignee: its id or any of its identifiers."""
    return frozenset({str(entity.id).upper(), *(v.strip().upper() for v in entity.identifiers.values())})


def _manifest_fixed(delivery_id: UUID, entity_id: UUID, entity_name: str, recipients: list[dict[str, Any]],
                    requirement: str, start: date, end: date, at: datetime, value_sets: dict[str, str],
                    policy_version: str) -> dict[str, Any]:
    return {"transactionTime": at.isoformat(), "request": f"$qip-export?requirement={requirement}&period={start}/{end}",
            "extension": {"delivery_id": str(delivery_id), "entity": {"id": str(entity_id), "name": entity_name},
                          "recipients": [{k: r[k] for k in ("name", "address", "role", "legal_basis") if k in r}
                                         for r in recipients],
                          "requirement": requirement, "period": {"start": start.isoformat(), "end": end.isoformat()},
                          "value_sets": value_sets, "policy_version": policy_version, "purpose": PURPOSE,
                          "legal_basis": LEGAL_BASIS}}


class _StoredSink:
    def __init__(self, writer: FileWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> tuple[str, int]:
        stored = self.writer.close()
        return stored.sha256, stored.size


class _HashSink:
    def __init__(self) -> None:
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> tuple[str, int]:
        return self.digest.hexdigest(), self.size
