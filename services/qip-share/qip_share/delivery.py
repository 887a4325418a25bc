"""A delivery to a QIP entity, as a pure function of its inputs (DOMAIN.md Part B): the same plan over the same
stored feeds gives the same bytes, which is what lets `dsi audit reproduce` prove a past delivery.

Selection, record by record (rules `RULES_VERSION`; DOMAIN.md Part B "Whose data"):
1. the member is one of the entity's assigned lives — assigned to it on at least one day of the requirement's
   period — and the record lies inside the requirement's data window (a span record: overlaps it); every such
   record is delivered, whatever day of the period the assignment started, so a member reassigned mid-period
   brings all their in-window records to each entity that held them in the period.
   (Deliveries recorded before the rules were versioned — `rules_version` None — were built under the original
   reading and are rebuilt under it: the member assigned to the entity on the record's date within the period.)
2. the record's kind is one the requirement names; a clinical record has a code in the value sets
   (eligibility and coverage records carry no codes: they place the member in denominators);
3. the sensitivity policy withholds it unless a legal basis recorded for the member lifts the category:
   counted per reason, never written;
4. the same record (kind and key) in a later feed file replaces the earlier one.
Output: NDJSON per FHIR resource type (Patient for every member with a delivered record) and a Bulk Data manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, Protocol

from dsi_shared.members import Span, assignee_on

from qip_share.feeds import FEED_KINDS, FeedRecord, read_feed
from qip_share.policy import withheld_by
from qip_share.resources import patient, resource_of

Interval = tuple[date, date]
LegalBasis = tuple[str, date, date | None]
RULES_VERSION = "2026.1"  # assigned at any time in the period; every value-set record in the data window
PROVIDER_COLUMNS = ("billing_npi", "rendering_npi")  # the provider a record comes from (e.g. a Part 2 program)


@dataclass(frozen=True)
class MemberScope:
    spans: tuple[Span, ...]  # every QIP span of the member, whoever the assignee
    legal_bases: tuple[LegalBasis, ...] = ()


@dataclass(frozen=True)
class DeliveryPlan:
    delivery_id: str
    entity_keys: frozenset[str]  # how enrollment names this entity as an assignee (its id and identifiers)
    period_start: date
    period_end: date
    feeds: tuple[tuple[str, str], ...]  # (kind, sha256), in the order they were ingested
    feed_kinds: frozenset[str]
    codes: frozenset[tuple[str, str]]
    policy: dict[str, Any]
    members: dict[str, MemberScope]
    manifest: dict[str, Any]  # the manifest's fixed part: transactionTime, request, extension
    rules_version: str | None = RULES_VERSION  # None: the original rules (see the module's docstring)
    data_window: Interval | None = None  # None: the period


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> tuple[str, int]: ...  # (sha256, size)


@dataclass(slots=True)
class MemberTally:
    records: Counter[str] = field(default_factory=Counter)
    withheld: Counter[str] = field(default_factory=Counter)
    kinds: set[str] = field(default_factory=set)


@dataclass
class DeliveryResult:
    files: list[dict[str, Any]]
    manifest: dict[str, Any]
    manifest_bytes: bytes
    members: dict[str, MemberTally]
    totals: dict[str, Any]


def assigned_intervals(spans: Iterable[Span], keys: frozenset[str], start: date, end: date) -> list[Interval]:
    """The days within [start, end] on which the member is assigned to one of `keys`, as closed intervals."""
    spans = list(spans)
    cuts = {start}
    for s_start, s_end, _ in spans:
        if start < s_start <= end:
            cuts.add(s_start)
        if s_end is not None and start <= s_end < end:
            cuts.add(date.fromordinal(s_end.toordinal() + 1))
    bounds = sorted(cuts)
    intervals: list[Interval] = []
    for i, first in enumerate(bounds):
        last = date.fromordinal(bounds[i + 1].toordinal() - 1) if i + 1 < len(bounds) else end
        holder = assignee_on(spans, first)
        if holder is not None and holder.strip().upper() in keys:
            if intervals and intervals[-1][1].toordinal() + 1 == first.toordinal():
                intervals[-1] = (intervals[-1][0], last)
            else:
                intervals.append((first, last))
    return intervals


def scope_digest(plan_members: dict[str, MemberScope], intervals: dict[str, list[Interval]]) -> str:
    """SHA-256 over who was in scope and on which days, with their legal bases: recorded with the delivery and
    recomputed from the event log by a reproduction."""
    digest = hashlib.sha256()
    for cin in sorted(intervals):
        bases = sorted((b, s.isoformat(), e.isoformat() if e else "") for b, s, e in plan_members[cin].legal_bases)
        digest.update(json.dumps([cin, [[a.isoformat(), b.isoformat()] for a, b in intervals[cin]], bases]).encode())
    return digest.hexdigest()


def _age(birth_date: str | None, on: date) -> int | None:
    if not birth_date:
        return None
    born = date.fromisoformat(birth_date)
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _ndjson(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _Outputs:
    def __init__(self, sink: Callable[[str], Sink]) -> None:
        self.sink, self.open, self.counts = sink, dict[str, Sink](), Counter[str]()

    def write(self, resource_type: str, resource: dict[str, Any]) -> None:
        if resource_type not in self.open:
            self.open[resource_type] = self.sink(resource_type)
        self.open[resource_type].write(_ndjson(resource))
        self.counts[resource_type] += 1

    def close(self) -> list[dict[str, Any]]:
        files = []
        for resource_type in sorted(self.open):
            sha256, size = self.open[resource_type].close()
            files.append({"type": resource_type, "sha256": sha256, "size": size, "count": self.counts[resource_type]})
        return files


def build_delivery(plan: DeliveryPlan, open_feed: Callable[[str], IO[bytes]],
                   sink: Callable[[str], Sink]) -> DeliveryResult:
    intervals = {cin: found for cin, scope in plan.members.items()
                 if (found := assigned_intervals(scope.spans, plan.entity_keys, plan.period_start, plan.period_end))}
    in_scope = intervals.__contains__
    demographics: dict[str, dict[str, str]] = {}
    tallies: dict[str, MemberTally] = {}
    excluded: Counter[str] = Counter()
    seen: set[bytes] = set()
    outputs = _Outputs(sink)
    newest_first = list(reversed(plan.feeds))

    window_start, window_end = plan.data_window or (plan.period_start, plan.period_end)
    labels_seen: Counter[str] = Counter()

    def in_window(record: FeedRecord) -> bool:
        if record.day is not None:
            return window_start <= record.day <= window_end
        assert record.start is not None
        return record.start <= window_end and window_start <= (record.end or date.max)

    def on_assigned_day(cin: str, record: FeedRecord) -> bool:
        if record.day is not None:
            return any(a <= record.day <= b for a, b in intervals[cin])
        assert record.start is not None
        last = record.end or date.max
        return any(record.start <= b and a <= last for a, b in intervals[cin])

    def admit(record: FeedRecord) -> None:
        kind = FEED_KINDS[record.kind]
        key = hashlib.blake2b(f"{record.kind}|{record.key}".encode(), digest_size=16).digest()
        if key in seen:
            excluded["superseded_by_a_later_file"] += 1
            return
        seen.add(key)
        if plan.rules_version is None:
            if not on_assigned_day(record.cin, record):
                excluded["outside_period_or_assignment"] += 1
                return
        elif not in_window(record):
            excluded["outside_data_window"] += 1
            return
        tally = tallies.setdefault(record.cin, MemberTally())
        if kind.clinical:
            assert record.day is not None
            if not any(code in plan.codes for code in record.codes):
                excluded["not_in_value_sets"] += 1
                return
            bases = [b for b, s, e in plan.members[record.cin].legal_bases if s <= record.day and (e is None or record.day <= e)]
            age = _age(demographics.get(record.cin, {}).get("birth_date"), record.day)
            labels_seen.update(record.labels)
            reason = withheld_by(plan.policy, record.codes, record.labels, record.kind, age, bases,
                                 [record.fields[c] for c in PROVIDER_COLUMNS if c in record.fields],
                                 record.fields.get("record_type"))
            if reason is not None:
                tally.withheld[reason] += 1
                return
        outputs.write(kind.resource, resource_of(record, kind.resource))
        tally.records[kind.resource] += 1
        tally.kinds.add(record.kind)

    # Demographics first (ages for the policy, Patient resources), from the newest eligibility row per member.
    for kind_name, sha256 in newest_first:
        if kind_name != "eligibility":
            continue
        with open_feed(sha256) as stream:
            for record in read_feed(FEED_KINDS[kind_name], stream, in_scope):
                if isinstance(record, FeedRecord) and record.cin not in demographics:
                    demographics[record.cin] = {k: record.fields[k] for k in ("birth_date", "sex") if k in record.fields}
    for kind_name, sha256 in newest_first:
        if kind_name not in plan.feed_kinds:
            continue
        with open_feed(sha256) as stream:
            for record in read_feed(FEED_KINDS[kind_name], stream, in_scope):
                if isinstance(record, FeedRecord):
                    admit(record)
    for cin in sorted(c for c, t in tallies.items() if t.records):
        outputs.write("Patient", patient(cin, demographics.get(cin)))
        tallies[cin].records["Patient"] += 1
    files = outputs.close()
    withheld: Counter[str] = Counter()
    for tally in tallies.values():
        withheld.update(tally.withheld)
    totals = {"records": {f["type"]: f["count"] for f in files}, "withheld": dict(sorted(withheld.items())),
              "excluded": dict(sorted(excluded.items())), "security_labels_seen": dict(sorted(labels_seen.items())),
              "members_in_scope": len(intervals),
              "members_disclosed": sum(1 for t in tallies.values() if t.records)}
    manifest = {**plan.manifest, "requiresAccessToken": True, "error": [],
                "output": [{"type": f["type"], "url": f"deliveries/{plan.delivery_id}/files/{f['type']}.ndjson",
                            "count": f["count"], "extension": {"sha256": f["sha256"], "size": f["size"]}} for f in files]}
    manifest["extension"] = {**manifest.get("extension", {}), "withheld": totals["withheld"],
                             "scope_sha256": scope_digest(plan.members, intervals)}
    if plan.rules_version is not None:  # the original rules' manifests had neither (their bytes must not change)
        manifest["extension"] |= {"rules_version": plan.rules_version,
                                  "data_window": {"start": window_start.isoformat(), "end": window_end.isoformat()},
                                  "security_labels_seen": totals["security_labels_seen"]}
    manifest_bytes = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n"
    return DeliveryResult(files, manifest, manifest_bytes, {c: t for c, t in tallies.items() if t.records or t.withheld},
                          totals)
