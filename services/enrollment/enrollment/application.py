"""The enrollment Application: the only door to participants, program rules, members and rosters."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import NotFound, PermanentError
from dsi_shared.store import ServiceApplication
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from enrollment.domain import Participant, ProviderIdentity, identity_keys
from enrollment.members import CinAlias, Member, normalise_cin
from enrollment.rosters import AttributionRow, EligibilityRow, RowError
from enrollment.rules import ProgramRules, Rules, UnknownProviderType, default_rules_document, eligibility_reasons

CHUNK = 500  # rows saved per transaction on import: the PostgreSQL recorder serialises writers, so batch
MAX_REPORTED_ERRORS = 1000


class ImportBatch(Aggregate):
    """One roster file, by content: importing the same bytes again changes nothing."""

    @staticmethod
    def create_id(kind: str, sha256: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/enrollment/import/{kind}/{sha256}")

    @event("RosterImported")
    def __init__(self, kind: str, file_format: str, sha256: str, size: int, rows: int, accepted: int,
                 members_changed: int, rejected: int, errors: list[dict[str, Any]]) -> None:
        self.report = {"kind": kind, "format": file_format, "sha256": sha256, "size": size, "rows": rows,
                       "accepted": accepted, "members_changed": members_changed, "rejected": rejected, "errors": errors}


class Enrollment(ServiceApplication):
    name = "enrollment"

    # -- program rules -------------------------------------------------------------------------------------------
    def program_rules(self) -> ProgramRules:
        try:
            return self.repository.get(ProgramRules.create_id())
        except AggregateNotFoundError:
            raise NotFound("no program rules published yet") from None

    def current_rules(self) -> Rules:
        return self.program_rules().current

    def publish_rules(self, document: dict[str, Any], reason: str) -> tuple[str, bool]:
        try:
            rules = self.program_rules()
        except NotFound:
            rules = ProgramRules()
        changed = rules.publish(document, reason)
        if changed:
            self.save(rules)
        return rules.current.version, changed

    def ensure_default_rules(self) -> None:
        """At start: publish the packaged rules version if the store does not have it yet (replicas may race)."""
        try:
            self.publish_rules(default_rules_document(), reason="packaged default (DOMAIN.md A5)")
        except IntegrityError:
            pass
        except PermanentError:
            pass  # a different document under the packaged version number was published on purpose: keep it

    # -- participants ----------------------------------------------------------------------------------------
    def register_participant(self, form: dict[str, Any]) -> UUID:
        """Record the interest form with its eligibility verdict (every failed reason), claim its NPI/TIN,
        and attach any DSA signed before the form. Raises DuplicateParticipant for a known NPI/TIN."""
        for attempt in range(3):
            rules = self.current_rules()
            if not rules.knows(form["provider_type"]):
                raise UnknownProviderType(f"unknown provider type {form['provider_type']!r} in rules {rules.version}")
            participant = Participant(**form)
            reasons = eligibility_reasons(
                rules, provider_type=form["provider_type"], counties=form["counties"], ehr_product=form["ehr_product"],
                is_hospital=form["is_hospital"], facility_kind=form.get("facility_kind"),
                umbrella_group=form["umbrella_group"], manages_ehr=form["manages_ehr"], submitted_on=form["submitted_on"])
            schedule = rules.document["provider_types"].get(form["provider_type"])
            participant.determine_eligibility(eligible=not reasons, reasons=reasons, rule_version=rules.version,
                                              schedule=schedule)
            identities = [self._identity(key) for key in identity_keys(form.get("npi"), form.get("tin"))]
            for identity in identities:
                for held in identity.claim(participant.id):
                    participant.sign(held["agreement"], held["signed_at"], held["document_id"], "before-interest-form")
            try:
                self.save(participant, *identities)
                return participant.id
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _identity(self, key: str) -> ProviderIdentity:
        try:
            return self.repository.get(ProviderIdentity.create_id(key))
        except AggregateNotFoundError:
            return ProviderIdentity(key)

    def participant(self, participant_id: UUID) -> Participant:
        try:
            found: Any = self.repository.get(participant_id)
        except AggregateNotFoundError:
            raise NotFound("no such participant") from None
        if not isinstance(found, Participant):
            raise NotFound("no such participant")
        return found

    def participants(self, provider_type: str | None = None, county: str | None = None,
                     status: str | None = None) -> list[Participant]:
        topic = "enrollment.domain:Participant.ParticipantRegistered"
        ids = [n.originator_id for n in self._notifications(topic)]
        found = [self.participant(pid) for pid in ids]
        return [p for p in found
                if (provider_type is None or p.provider_type == provider_type)
                and (county is None or county.casefold() in {c.casefold() for c in p.counties})
                and (status is None or p.status == status)]

    def _notifications(self, topic: str) -> Iterator[Any]:
        last = 0
        while page := self.recorder.select_notifications(start=last, limit=1000, topics=[topic], inclusive_of_start=False):
            yield from page
            last = page[-1].id

    def sign_agreement(self, participant_id: UUID, agreement: str, signed_at: datetime, document_id: str,
                       channel: str) -> bool:
        """True when this is a new signature, False when the same signature was already recorded."""
        participant = self.participant(participant_id)
        recorded = participant.sign(agreement, signed_at, document_id, channel)
        if recorded:
            self.save(participant)
        return recorded

    def sign_by_identity(self, npi: str | None, tin: str | None, agreement: str, signed_at: datetime,
                         document_id: str, channel: str) -> tuple[UUID | None, list[Aggregate]]:
        """A signature that names the provider by NPI/TIN: signed onto its participant when one exists,
        else held until the interest form arrives (only the DSA may come first). Returns what to save."""
        identity = self._identity(identity_keys(npi, tin)[0])
        if identity.participant_id is not None:
            participant = self.participant(identity.participant_id)
            participant.sign(agreement, signed_at, document_id, channel)
            return participant.id, [participant]
        identity.hold(agreement, signed_at, document_id)
        return None, [identity]

    def review_agreement(self, participant_id: UUID, agreement: str, document_id: str, decision: str,
                         reason: str | None) -> bool:
        participant = self.participant(participant_id)
        changed = participant.review(agreement, document_id, decision, reason)
        if changed:
            self.save(participant)
        return changed

    def depart(self, participant_id: UUID, kind: str, effective_on: date, reason: str) -> None:
        participant = self.participant(participant_id)
        participant.leave(kind, effective_on, reason)
        self.save(participant)

    def history(self, aggregate_id: UUID) -> list[dict[str, Any]]:
        return [{"version": e.originator_version, "event": type(e).__name__, "recorded_at": getattr(e, "timestamp", None)}
                for e in self.events.get(aggregate_id)]

    # -- members ------------------------------------------------------------------------------------------------
    def member(self, raw_id: str) -> tuple[Member, str | None]:
        """The member by CIN, or by a frozen CIN it absorbed; also says which frozen CIN was asked for."""
        cin = normalise_cin(raw_id)
        try:
            return self.repository.get(Member.create_id(cin)), None
        except AggregateNotFoundError:
            pass
        try:
            alias: CinAlias = self.repository.get(CinAlias.create_id(cin))
            return self.repository.get(Member.create_id(alias.current_cin)), cin
        except AggregateNotFoundError:
            raise NotFound("no such member") from None

    def import_roster(self, kind: str, file_format: str, data: bytes,
                      rows: Iterable[EligibilityRow | AttributionRow | RowError]) -> tuple[dict[str, Any], bool]:
        """Apply parsed rows in chunks (one transaction each) and record the batch. The same file again → the
        recorded report, no change. Returns (report, already_imported)."""
        sha256 = hashlib.sha256(data).hexdigest()
        batch_id = ImportBatch.create_id(kind, sha256)
        try:
            return self.repository.get(batch_id).report, True
        except AggregateNotFoundError:
            pass
        counts = {"rows": 0, "accepted": 0, "members_changed": 0}
        errors: list[dict[str, Any]] = []
        chunk: list[EligibilityRow | AttributionRow] = []
        source = f"{kind}:{sha256[:16]}"
        for row in rows:
            counts["rows"] += 1
            if isinstance(row, RowError):
                errors.append(asdict(row))
                continue
            chunk.append(row)
            if len(chunk) >= CHUNK:
                self._apply_chunk(chunk, source, counts, errors)
                chunk = []
        if chunk:
            self._apply_chunk(chunk, source, counts, errors)
        errors.sort(key=lambda e: e["line"])
        batch = ImportBatch(kind, file_format, sha256, len(data), counts["rows"], counts["accepted"],
                            counts["members_changed"], len(errors), errors[:MAX_REPORTED_ERRORS])
        try:
            self.save(batch)
        except IntegrityError:
            return self.repository.get(batch_id).report, True  # the same file imported concurrently
        return batch.report, False

    def _apply_chunk(self, rows: list[EligibilityRow | AttributionRow], source: str, counts: dict[str, int],
                     errors: list[dict[str, Any]]) -> None:
        members: dict[str, Member] = {}
        extra: list[Aggregate] = []
        for row in rows:
            member = members.get(row.cin) or self._member_or_new(row.cin)
            members[row.cin] = member
            try:
                if isinstance(row, EligibilityRow):
                    extra.extend(self._apply_eligibility(member, row, source))
                else:
                    member.attribute(row.kind, row.assignee, row.start, row.end, source)
                counts["accepted"] += 1
            except PermanentError as exc:
                errors.append({"line": row.line, "reason": str(exc)})
        changed = [m for m in members.values() if m.pending_events]
        counts["members_changed"] += len(changed)
        self.save(*changed, *extra)

    def _apply_eligibility(self, member: Member, row: EligibilityRow, source: str) -> list[Aggregate]:
        if row.family_name or row.given_name or row.birth_date:
            member.record_demographics(row.family_name, row.given_name, row.birth_date, source)
        if row.terminated:
            assert row.end is not None
            member.terminate(row.end, source)
        else:
            assert row.start is not None
            member.record_eligibility(row.start, row.end, row.aid_code, row.other_health_coverage, row.dual_eligible,
                                      source)
        aliases: list[Aggregate] = []
        for frozen in row.frozen_cins:
            if member.add_alias(frozen):
                aliases.append(CinAlias(frozen, member.cin))
        return aliases

    def _member_or_new(self, cin: str) -> Member:
        try:
            return self.repository.get(Member.create_id(cin))
        except AggregateNotFoundError:
            return Member(cin)
