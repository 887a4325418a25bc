"""The enrollment Application: the only door to participants, program rules, members and rosters."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import asdict
from datetime import date, datetime
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import NotFound, PermanentError
from dsi_shared.occ import retry_on_conflict
from dsi_shared.rulebook import RuleBook, RulesDocument
from dsi_shared.store import ServiceApplication
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from enrollment.atr import ProviderSources
from enrollment.domain import DuplicateParticipant, Participant, ProviderIdentity, identity_keys
from enrollment.dsa_list import SignatoryList, match_signatories
from enrollment.members import CinAlias, Member, normalise_cin
from enrollment.rosters import AttributionRow, EligibilityRow, RowError
from enrollment.rules import ProgramRules, UnknownProviderType, default_rules_document, judge_interest_form, knows

T = TypeVar("T")
# Rows saved per transaction on import: the PostgreSQL recorder serialises writers, so batch. Each chunk costs a
# lookup, a table lock, a commit (fsync) and the round trips between, each also waiting for the GIL the parse holds:
# 2,000 rows (some 6,000 events, a few MB) keep that under a tenth of a chunk's time, and the lock brief.
CHUNK = 2000
MAX_REPORTED_ERRORS = 1000
# What became of each applied row; accepted = added + changed + terminated + unchanged, and
# rows = accepted + not_applied + rejected.
OUTCOMES = ("added", "changed", "terminated", "unchanged", "not_applied")
NO_SPAN_TO_TERMINATE = "INS03 024: the plan has no eligibility span for the member on or before the termination date"


class ImportBatch(Aggregate):
    """One roster file, by content: importing the same bytes again changes nothing."""

    @staticmethod
    def create_id(kind: str, sha256: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/enrollment/import/{kind}/{sha256}")

    @event("RosterImported")
    def __init__(self, kind: str, file_format: str, sha256: str, size: int, rows: int, accepted: int,
                 members_changed: int, rejected: int, errors: list[dict[str, Any]],
                 provider_sources: dict[str, Any] | None = None, outcomes: dict[str, int] | None = None,
                 notes: list[dict[str, Any]] | None = None, leniencies: dict[str, int] | None = None) -> None:
        # `outcomes`, `notes` (lines applied with a leniency, or not applied, and why) and `leniencies` (how many
        # lines each leniency concerned) are absent from reports recorded before they existed.
        self.report = {"kind": kind, "format": file_format, "sha256": sha256, "size": size, "rows": rows,
                       "accepted": accepted, **(outcomes or {}), "members_changed": members_changed,
                       "rejected": rejected, "errors": errors, "notes": notes or [], "leniencies": leniencies or {}}
        if provider_sources:  # an ATR PCP list: whose NPI each member was attributed to
            self.report["provider_sources"] = provider_sources


class Enrollment(ServiceApplication):
    name = "enrollment"

    # -- program rules -------------------------------------------------------------------------------------------
    def program_rules(self) -> ProgramRules:
        try:
            return self.repository.get(ProgramRules.create_id())
        except AggregateNotFoundError:
            raise NotFound("no program rules published yet") from None

    def current_rules(self) -> RulesDocument:
        return self.program_rules().current

    def rulebook(self) -> RuleBook:
        return self.program_rules().book

    def rules_history(self) -> list[dict[str, Any]]:
        """Each published version with its reason and when it was published, read from the record's own events
        (a correction is a version effective before the day it was published)."""
        published = []
        recorded: list[Any] = list(self.repository.event_store.get(ProgramRules.create_id()))
        for one in recorded:
            if type(one).__name__ == "RulesPublished":
                published.append({"version": one.document["version"], "reason": one.reason,
                                  "published_at": one.timestamp})
        return published

    def publish_rules(self, document: dict[str, Any], reason: str, confirm_lowering: bool = False) -> tuple[str, bool]:
        def attempt() -> tuple[str, bool]:
            try:
                rules = self.program_rules()
            except NotFound:
                rules = ProgramRules()
            changed = rules.publish(document, reason, confirm_lowering)
            if changed:
                self.save(rules)
            return rules.current.version, changed

        return retry_on_conflict(attempt, "the program rules")

    def ensure_default_rules(self) -> None:
        """At start: publish the packaged rules version if the store does not have it yet (replicas may race)."""
        try:
            self.publish_rules(default_rules_document(), reason="packaged default (DOMAIN.md A5)")
        except PermanentError:
            pass  # a different document under the packaged version number was published on purpose: keep it

    # -- participants ----------------------------------------------------------------------------------------
    def register_participant(self, form: dict[str, Any]) -> UUID:
        """Record the interest form with its eligibility verdict (every failed reason), claim its NPI/TIN,
        and attach any DSA signed (or acceptance reported) before the form. An NPI/TIN already known may apply
        again after an ineligible form, or for another provider type (A1); DuplicateParticipant when an eligible
        participant of the same provider type has it."""
        def attempt() -> UUID:
            book = self.rulebook()
            rules = book.in_force(form["submitted_on"]) or book.latest
            if rules is None or not knows(rules, form["provider_type"]):
                version = rules.version if rules else "none"
                raise UnknownProviderType(f"unknown provider type {form['provider_type']!r} in rules {version}")
            identities = [self._identity(key) for key in identity_keys(form.get("npi"), form.get("tin"))]
            previous, organization = None, None
            for identity in identities:
                previous, organization = self._application_links(identity, form["provider_type"])
            participant = Participant(**form, previous_application=previous, organization_id=organization)
            verdict = judge_interest_form(
                book.in_force(form["submitted_on"]), provider_type=form["provider_type"], counties=form["counties"],
                ehr_product=form["ehr_product"], is_hospital=form["is_hospital"], facility_kind=form.get("facility_kind"),
                umbrella_group=form["umbrella_group"], manages_ehr=form["manages_ehr"], submitted_on=form["submitted_on"])
            # No schedule is copied onto the participant: every service reads the type's row from the version in
            # force on the date a decision concerns, so a correction reaches participants already enrolled.
            participant.determine_eligibility(eligible=not verdict.reasons, reasons=verdict.reasons,
                                              rule_version=rules.version, schedule=None, flags=verdict.flags)
            for identity in identities:
                signatures, acceptances = identity.claim(participant.id)
                for held in signatures:
                    participant.sign(held["agreement"], held["signed_at"], held["document_id"], "before-interest-form")
                for held in acceptances:
                    participant.accept(held["agreement"], held["document_id"], held["reason"], held["decided_by"],
                                       held["accepted_at"])
            self.save(participant, *identities)
            return participant.id

        return retry_on_conflict(attempt, "the provider's NPI/TIN record")

    def _identity(self, key: str) -> ProviderIdentity:
        try:
            return self.repository.get(ProviderIdentity.create_id(key))
        except AggregateNotFoundError:
            return ProviderIdentity(key)

    def _application_links(self, identity: ProviderIdentity, provider_type: str) -> tuple[UUID | None, UUID | None]:
        """A1, applying again: after an ineligible form the new one links to it (`previous_application`, the latest
        ineligible one, of the same type if there is one); an organization already eligible under another provider
        type joins a later round (`organization_id` = its first participation). The same provider type while an
        earlier application of it is eligible: DuplicateParticipant."""
        earlier = [self.participant(pid) for pid in identity.participants]  # (previous, organization_id)
        for p in earlier:
            if p.provider_type == provider_type and p.eligible:
                raise DuplicateParticipant(identity.key, p.id)
        ineligible = [p for p in earlier if not p.eligible]
        same_type = [p for p in ineligible if p.provider_type == provider_type]
        previous = (same_type or ineligible)[-1].id if ineligible else None
        eligible = [p for p in earlier if p.eligible]
        return previous, eligible[0].organization if eligible else None

    def applications_under(self, participant: Participant) -> list[Participant]:
        """Every application made under this participant's NPI (or TIN), oldest first, itself included."""
        identity = self._identity(identity_keys(participant.npi, participant.tin)[0])
        return [self.participant(pid) for pid in identity.participants] or [participant]

    def current_participant(self, identity: ProviderIdentity) -> Participant | None:
        """Whom a signature or acceptance naming only the NPI/TIN is for: the latest eligible application under
        it, else the latest application."""
        if not identity.participants:
            return None
        applications = [self.participant(pid) for pid in identity.participants]
        return next((p for p in reversed(applications) if p.eligible), applications[-1])

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

    def update(self, participant_id: UUID, change: Callable[[Participant], T]) -> T:
        """Load, change and save one participant; a concurrent change (a signature arriving on NATS while staff
        act over HTTP) is a version conflict: reload and apply the change again."""
        def attempt() -> T:
            participant = self.participant(participant_id)
            result = change(participant)
            if participant.pending_events:
                self.save(participant)
            return result

        return retry_on_conflict(attempt, "the participant")

    def sign_agreement(self, participant_id: UUID, agreement: str, signed_at: datetime, document_id: str,
                       channel: str) -> bool:
        """True when this is a new signature, False when the same signature was already recorded."""
        return self.update(participant_id, lambda p: p.sign(agreement, signed_at, document_id, channel))

    def sign_by_identity(self, npi: str | None, tin: str | None, agreement: str, signed_at: datetime,
                         document_id: str, channel: str) -> tuple[UUID | None, list[Aggregate]]:
        """A signature that names the provider by NPI/TIN: signed onto its participant when one exists,
        else held until the interest form arrives (only the DSA may come first). Returns what to save."""
        identity = self._identity(identity_keys(npi, tin)[0])
        participant = self.current_participant(identity)
        if participant is not None:
            participant.sign(agreement, signed_at, document_id, channel)
            return participant.id, [participant]
        identity.hold(agreement, signed_at, document_id)
        return None, [identity]

    def sign_by_identity_and_save(self, npi: str | None, tin: str | None, agreement: str, signed_at: datetime,
                                  document_id: str, channel: str) -> UUID | None:
        """`sign_by_identity`, saved; a concurrent change is retried."""
        def attempt() -> UUID | None:
            owner, aggregates = self.sign_by_identity(npi, tin, agreement, signed_at, document_id, channel)
            self.save(*aggregates)
            return owner

        return retry_on_conflict(attempt, "the participant")

    def accept_by_identity(self, npi: str | None, tin: str | None, agreement: str, document_id: str, reason: str,
                           decided_by: str, accepted_at: datetime | None) -> tuple[UUID | None, list[Aggregate]]:
        """An acceptance naming the provider by NPI/TIN: applied to its participant (held there until the
        signature arrives), or held on the identity until the interest form arrives. Returns what to save."""
        identity = self._identity(identity_keys(npi, tin)[0])
        participant = self.current_participant(identity)
        if participant is not None:
            participant.accept(agreement, document_id, reason, decided_by, accepted_at)
            return participant.id, [participant]
        identity.hold_acceptance(agreement, document_id, reason, decided_by, accepted_at)
        return None, [identity]

    def accept_agreements(self, participant_id: UUID, reason: str) -> list[dict[str, str]]:
        """Staff accept every signed, not yet reviewed document of a participant in one action."""
        return self.update(participant_id, lambda p: p.accept_signed(reason))

    def set_due_date(self, participant_id: UUID, due_on: date, reason: str) -> bool:
        return self.update(participant_id, lambda p: p.set_due_date(due_on, reason))

    def extend_signing(self, participant_id: UUID, until: date, reason: str) -> bool:
        return self.update(participant_id, lambda p: p.extend_signing(until, reason))

    def import_dsa_list(self, parsed: SignatoryList, list_date: date) -> dict[str, Any]:
        """The DxF DSA signatory list (see `dsa_list`): a participant found by NPI/TIN gets its DSA signed and
        accepted with the list as evidence; one found by legal name only gets it signed, left for staff review.
        Document ids come from the rows, so the same list again changes nothing. One transaction."""
        def attempt() -> dict[str, Any]:
            report, changed = match_signatories(parsed, self.participants(), list_date)
            if changed:
                self.save(*changed)
            return report

        return retry_on_conflict(attempt, "a participant on the list")

    def review_agreement(self, participant_id: UUID, agreement: str, document_id: str, decision: str,
                         reason: str | None) -> bool:
        return self.update(participant_id, lambda p: p.review(agreement, document_id, decision, reason))

    def depart(self, participant_id: UUID, kind: str, effective_on: date, reason: str) -> None:
        self.update(participant_id, lambda p: p.leave(kind, effective_on, reason))

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
        """Apply parsed rows in chunks (one transaction each, in file order; the next chunk parsed while one is
        saved) and record the batch. The same file again → the recorded report, no change. Returns (report,
        already_imported)."""
        sha256 = hashlib.sha256(data).hexdigest()
        batch_id = ImportBatch.create_id(kind, sha256)
        try:
            return self.repository.get(batch_id).report, True
        except AggregateNotFoundError:
            pass
        counts = {"rows": 0, "accepted": 0, "members_changed": 0, **dict.fromkeys(OUTCOMES, 0)}
        errors: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        chunk: list[EligibilityRow | AttributionRow] = []
        source = f"{kind}:{sha256[:16]}"
        providers = ProviderSources(MAX_REPORTED_ERRORS)
        applying: Future[tuple[Counter[str], list[dict[str, Any]], list[dict[str, Any]]]] | None = None

        def applied() -> None:  # the chunk being applied: wait for it, take its counts
            if applying is not None:
                part_counts, part_errors, part_notes = applying.result()
                for key, n in part_counts.items():
                    counts[key] += n
                errors.extend(part_errors)
                notes.extend(part_notes)

        # Parsing (CPU) overlaps saving (mostly waiting on the database): the next chunk is parsed while the
        # previous one is applied and saved by one thread, chunk after chunk in file order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="roster-import") as saver:
            for row in rows:
                counts["rows"] += 1
                if isinstance(row, RowError):
                    errors.append(asdict(row))
                    continue
                providers.note(row)
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    applied()
                    applying = saver.submit(copy_context().run, self._apply_chunk_apart, chunk, source)
                    chunk = []
            applied()
            if chunk:
                applying = saver.submit(copy_context().run, self._apply_chunk_apart, chunk, source)
                applied()
        errors.sort(key=lambda e: e["line"])
        notes.sort(key=lambda n: n["line"])
        leniencies = dict(Counter(n["note"] for n in notes if n["outcome"] != "not_applied"))
        batch = ImportBatch(kind, file_format, sha256, len(data), counts["rows"], counts["accepted"],
                            counts["members_changed"], len(errors), errors[:MAX_REPORTED_ERRORS], providers.report(),
                            outcomes={k: counts[k] for k in OUTCOMES}, notes=notes[:MAX_REPORTED_ERRORS],
                            leniencies=leniencies)
        try:
            self.save(batch)
        except IntegrityError:
            return self.repository.get(batch_id).report, True  # the same file imported concurrently
        return batch.report, False

    def _apply_chunk_apart(self, rows: list[EligibilityRow | AttributionRow], source: str
                           ) -> tuple[Counter[str], list[dict[str, Any]], list[dict[str, Any]]]:
        """`_apply_chunk` with its own counts, errors and notes, for the caller to add up."""
        counts: Counter[str] = Counter()
        errors: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        self._apply_chunk(rows, source, counts, errors, notes)
        return counts, errors, notes

    def _apply_chunk(self, rows: list[EligibilityRow | AttributionRow], source: str, counts: dict[str, int],
                     errors: list[dict[str, Any]], notes: list[dict[str, Any]]) -> None:
        """One transaction; another roster changing the same members meanwhile → the chunk is applied again to
        the members as they are now. Each row's outcome is counted (`OUTCOMES`); a termination with no span to
        close is not applied (and registers no member)."""

        def attempt() -> tuple[dict[str, int], int, list[dict[str, Any]], list[dict[str, Any]]]:
            members: dict[str, Member] = {}
            extra: list[Aggregate] = []
            tally = dict.fromkeys(OUTCOMES, 0)
            refused: list[dict[str, Any]] = []
            noted: list[dict[str, Any]] = []
            stored = self.get_many((Member.create_id(row.cin) for row in rows), batch=CHUNK)  # one query per chunk
            for row in rows:
                found = members.get(row.cin) or stored.get(Member.create_id(row.cin))
                if isinstance(row, EligibilityRow) and row.terminated and (
                        found is None or row.end is None or not found.has_span_by(row.end)):
                    tally["not_applied"] += 1
                    noted.append({"line": row.line, "outcome": "not_applied", "note": NO_SPAN_TO_TERMINATE})
                    continue
                member = members[row.cin] = found or Member(row.cin)
                before, aliases = len(member.pending_events), []
                try:
                    if isinstance(row, EligibilityRow):
                        aliases = self._apply_eligibility(member, row, source)
                        extra.extend(aliases)
                    else:
                        member.attribute(row.kind, row.assignee, row.start, row.end, source)
                except PermanentError as exc:
                    refused.append({"line": row.line, "reason": str(exc)})
                    continue
                outcome = _outcome(row, member.pending_events[before:], bool(aliases))
                tally[outcome] += 1
                noted.extend({"line": row.line, "outcome": outcome, "note": note} for note in getattr(row, "notes", ()))
            changed = [m for m in members.values() if m.pending_events]
            self.save(*changed, *extra)
            return tally, len(changed), refused, noted

        tally, changed, refused, noted = retry_on_conflict(attempt, "a member in the file")
        for outcome, n in tally.items():
            counts[outcome] += n
        counts["accepted"] += sum(n for outcome, n in tally.items() if outcome != "not_applied")
        counts["members_changed"] += changed
        errors.extend(refused)
        notes.extend(noted)

    def _apply_eligibility(self, member: Member, row: EligibilityRow, source: str) -> list[Aggregate]:
        if row.family_name or row.given_name or row.birth_date:
            member.record_demographics(row.family_name, row.given_name, row.birth_date, source)
        if row.terminated:
            assert row.end is not None
            member.terminate(row.end, source, row.end_from)
        else:
            assert row.start is not None
            dates_from = {"start": row.start_from, "end": row.end_from} if row.start_from else None
            member.record_eligibility(row.start, row.end, row.aid_code, row.other_health_coverage, row.dual_eligible,
                                      source, dates_from)
        aliases: list[Aggregate] = []
        for frozen in row.frozen_cins:
            if member.add_alias(frozen):
                aliases.append(CinAlias(frozen, member.cin))
        return aliases


def _outcome(row: EligibilityRow | AttributionRow, new_events: list[Any], new_aliases: bool) -> str:
    if isinstance(row, EligibilityRow) and row.terminated:
        return "terminated" if new_events else "unchanged"
    if any(type(e).__name__ == "EligibilityOpened" for e in new_events):
        return "added"
    return "changed" if new_events or new_aliases else "unchanged"
