"""Da Vinci ATR attribution lists → `AttributionRow`s (an adapter; no aggregate is touched here).

Accepted shapes (HL7/davinci-atr `input/examples`): a `Group` alone (references into its `contained`), a `Bundle`
(any type) holding the Group and what it references, or the NDJSON of a `$davinci-data-export` (one resource a
line: Group, Patient, Practitioner, PractitionerRole, Organization…). `member.entity` (`Patient/<id>`, `#id`,
`urn:uuid:…`, an absolute URL, or a logical `identifier`) resolves to the Patient's CIN. A PCP list's assignee is
the member's `ext-attributedProvider` NPI; the Group's NPI (its identifier, else the patient list's
intended-recipient extension) only when the member names no provider — never instead of one it names but we
cannot resolve. Each row says which was used (`provider_from`). Reasons name fields, never values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from dsi_shared import jsonsafe
from dsi_shared.errors import describe
from dsi_shared.jsonsafe import JsonTooDeep
from dsi_shared.members import cin_of_fhir_identifiers
from fhir.resources.R4B.group import Group  # R4B: the R4-compatible release (ATR is an R4 IG)
from pydantic import ValidationError

from enrollment.members import PCP
from enrollment.rosters import (
    ATR_ATTRIBUTED_PROVIDER,
    NPI_SYSTEM,
    AttributionRow,
    RowError,
    UnreadableFile,
    _as_date,
    _Bad,
    _cin,
)

ATR_INTENDED_RECIPIENT = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/atr-intended-recipient-identifier-extension"
NPI_SYSTEMS = {NPI_SYSTEM, "urn:oid:2.16.840.1.113883.4.6"}
PROVIDER_TYPES = {"Practitioner", "PractitionerRole", "Organization"}
FROM_MEMBER, FROM_GROUP = "attributed_provider", "group_npi"


class _Index:
    """The file's resources by every name a reference may use: `Type/id`, `fullUrl`, `#id` (contained)."""

    def __init__(self) -> None:
        self._by: dict[str, dict[str, Any]] = {}

    def add(self, resource: Any, *names: str | None) -> None:
        if not isinstance(resource, dict):
            return
        rid = resource.get("id")
        for name in (*names, f"{resource.get('resourceType')}/{rid}" if rid else None):
            if name:
                self._by.setdefault(name, resource)

    def resolve(self, reference: str | None) -> dict[str, Any] | None:
        if not reference:
            return None
        found = self._by.get(reference)
        if found is None and "://" in reference:  # absolute URL: its Type/id tail, without /_history/n
            parts = reference.split("/_history/")[0].rstrip("/").split("/")
            found = self._by.get("/".join(parts[-2:]))
        return found


def _documents(text: str) -> list[Any]:
    try:
        return [jsonsafe.loads(text, "the Group")]
    except JsonTooDeep:
        raise
    except json.JSONDecodeError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2 or whole.msg != "Extra data":
            raise UnreadableFile("not a FHIR R4 Group (JSON)") from None
    try:  # NDJSON: one resource a line
        return [jsonsafe.loads(line, "an NDJSON line") for line in lines]
    except JsonTooDeep:
        raise
    except ValueError:
        raise UnreadableFile("not a FHIR R4 Group (NDJSON with a line that is not JSON)") from None


def _load(text: str) -> tuple[dict[str, Any], _Index]:
    index = _Index()
    documents = _documents(text)
    if len(documents) == 1 and isinstance(documents[0], dict) and documents[0].get("resourceType") == "Bundle":
        for entry in documents[0].get("entry") or []:
            if isinstance(entry, dict):
                index.add(entry.get("resource"), entry.get("fullUrl"))
        documents = [e.get("resource") for e in documents[0].get("entry") or [] if isinstance(e, dict)]
    else:
        for document in documents:
            index.add(document)
    groups = [d for d in documents if isinstance(d, dict) and d.get("resourceType") == "Group"]
    if len(groups) != 1:
        raise UnreadableFile(f"not a FHIR R4 Group (the file holds {len(groups)} Groups; send one per file)")
    for contained in groups[0].get("contained") or []:
        if isinstance(contained, dict) and contained.get("id"):
            index.add(contained, f"#{contained['id']}")
    return groups[0], index


def _dicts(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, dict)]


def _type_codes(identifier: dict[str, Any]) -> set[str]:
    return {str(c.get("code")) for t in _dicts(identifier.get("type")) for c in _dicts(t.get("coding"))}


def _npi_of(identifiers: Any) -> str | None:
    for identifier in _dicts(identifiers):
        value = str(identifier.get("value") or "").strip()
        if value and (identifier.get("system") in NPI_SYSTEMS or "NPI" in _type_codes(identifier)):
            return value
    return None


def _cin_of(identifiers: Any) -> str | None:
    found = cin_of_fhir_identifiers(identifiers)
    return found[0] if found else None


def _member_cin(entity: dict[str, Any], index: _Index) -> str:
    logical = entity.get("identifier")
    if isinstance(logical, dict) and logical.get("value"):
        return _cin(str(logical["value"]), "member.entity")
    reference = str(entity.get("reference") or "")
    patient = index.resolve(reference)
    if patient is None:
        if reference.startswith(("#", "urn:")):
            raise _Bad("member.entity: reference not found in the file")
        return _cin(reference.rsplit("Patient/", 1)[-1], "member.entity")  # `Patient/<CIN>` names the member
    if patient.get("resourceType") != "Patient":
        raise _Bad("member.entity: does not reference a Patient")
    cin = _cin_of(patient.get("identifier"))
    if cin is None:
        raise _Bad("member.entity: the Patient has no Medi-Cal CIN identifier (type MA, MB or MC)")
    return cin


def _provider_npi(reference: dict[str, Any], index: _Index) -> str:
    npi = _npi_of(reference.get("identifier"))
    if npi:
        return npi
    provider = index.resolve(reference.get("reference"))
    if provider is None:
        raise _Bad("attributedProvider: reference not found in the file (send the Practitioner, PractitionerRole or "
                   "Organization in a Bundle, as contained, or in the export's NDJSON)")
    kind = provider.get("resourceType")
    if kind not in PROVIDER_TYPES:
        raise _Bad("attributedProvider: must reference a Practitioner, PractitionerRole or Organization")
    npi = _npi_of(provider.get("identifier"))
    if npi is None and kind == "PractitionerRole":  # a role has no NPI of its own: its practitioner's, else its org's
        for part in _dicts([provider.get("practitioner"), provider.get("organization")]):
            target = index.resolve(part.get("reference"))
            npi = npi or _npi_of(part.get("identifier")) or (_npi_of(target.get("identifier")) if target else None)
    if npi is None:
        raise _Bad(f"attributedProvider: the {kind} has no NPI identifier ({NPI_SYSTEM})")
    return npi


def group_rows(text: str, kind: str) -> Iterator[AttributionRow | RowError]:
    raw, index = _load(text)
    try:
        group = Group.model_validate(raw)
    except ValidationError as exc:
        raise UnreadableFile(f"not a FHIR R4 Group ({describe(exc)})") from None
    recipients = [e.get("valueIdentifier") for e in _dicts(raw.get("extension")) if e.get("url") == ATR_INTENDED_RECIPIENT]
    group_npi = _npi_of(raw.get("identifier")) or _npi_of(recipients)
    group_id = next((i.value for i in group.identifier or [] if i.value), None)
    for number, (entry, member) in enumerate(zip(group.member or [], _dicts(raw.get("member")), strict=True), start=1):
        try:
            cin = _member_cin(member.get("entity") or {}, index)
            named = [r for e in _dicts(member.get("extension")) if e.get("url") == ATR_ATTRIBUTED_PROVIDER
                     for r in _dicts(e.get("valueReference"))]
            provider_from: str | None = None
            if kind != PCP:
                assignee = group_id or group_npi
            elif named:
                assignee, provider_from = _provider_npi(named[0], index), FROM_MEMBER
            else:
                assignee, provider_from = group_npi, FROM_GROUP
            if not assignee:
                raise _Bad("attributed provider: no NPI on the member or the group")
            if entry.period is None or entry.period.start is None:
                raise _Bad("member.period.start: missing")
            start = _as_date(entry.period.start)
            end = _as_date(entry.period.end) if entry.period.end else None
            if entry.inactive and end is None:
                raise _Bad("member.inactive without member.period.end")
            yield AttributionRow(number, cin, kind, str(assignee), start, end, provider_from=provider_from)
        except _Bad as bad:
            yield RowError(number, str(bad))


class ProviderSources:
    """For the import report: how many PCP members were attributed to their own `attributedProvider` and how many
    to the Group's NPI, and the lines of the latter (the exception staff should look at)."""

    def __init__(self, max_lines: int) -> None:
        self.counts = {FROM_MEMBER: 0, FROM_GROUP: 0}
        self.group_lines: list[int] = []
        self.max_lines = max_lines

    def note(self, row: AttributionRow | object) -> None:
        source = getattr(row, "provider_from", None)
        if source in self.counts:
            self.counts[source] += 1
            if source == FROM_GROUP:
                self.group_lines.append(int(getattr(row, "line", 0)))

    def report(self) -> dict[str, Any] | None:
        if not any(self.counts.values()):
            return None
        return {**self.counts, "group_npi_lines": self.group_lines[:self.max_lines],
                "group_npi_lines_not_shown": max(0, len(self.group_lines) - self.max_lines)}
