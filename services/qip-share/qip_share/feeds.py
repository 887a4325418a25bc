"""Source feeds (DOMAIN.md Part B "whatever its source"): the CSV columns of each kind, and a streaming parser
that turns a file into records — or, for a bad row, its line number and the reason (naming the column, never
its value). Only the columns listed here are ever read: anything else in a file is ignored (minimum necessary).

Every kind has `cin`; every clinical kind may have `security_labels` (HL7 v3 confidentiality/sensitivity codes,
`|`-separated: ETH, PSY, HIV, STD, SDV, SEX, 42CFRPart2). Multi-valued columns are `|`-separated.
Dates are `YYYY-MM-DD` or `YYYYMMDD`.

Immunizations and lab results may also come as FHIR R4 NDJSON (one Immunization or Observation per line, as CAIR2
and lab interfaces export them): each line is validated with fhir.resources and mapped onto the same columns, so
the same checks apply. A file is NDJSON when its first byte is `{`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

from dsi_shared import jsonsafe
from dsi_shared.errors import describe
from dsi_shared.members import CIN
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from qip_share.codes import CDT, CPT, CVX, HCPCS, ICD10CM, ICD10PCS, LOINC, NDC, RXNORM, SNOMED, normalise

_CPT = re.compile(r"^([0-9]{5}|[0-9]{4}[FTU])$")
_HCPCS = re.compile(r"^[A-V][0-9]{4}$")
_PATTERNS = {
    ICD10CM: re.compile(r"^[A-Z][0-9][0-9A-Z]{1,5}$"),
    ICD10PCS: re.compile(r"^[0-9A-HJ-NP-Z]{7}$"),
    LOINC: re.compile(r"^[0-9]{1,7}-[0-9]$"),
    SNOMED: re.compile(r"^[0-9]{6,18}$"),
    NDC: re.compile(r"^[0-9]{11}$"),
    RXNORM: re.compile(r"^[0-9]{1,9}$"),
    CVX: re.compile(r"^[0-9]{1,3}$"),
    CDT: re.compile(r"^D[0-9]{4}$"),
}
PROCEDURE = "cpt-or-hcpcs"  # a claim line's procedure code: CPT or HCPCS level II, told apart by shape


class BadRow(ValueError):
    pass


@dataclass(frozen=True)
class FeedKind:
    name: str
    description: str
    resource: str  # the FHIR resource type its records become
    key: tuple[str, ...]  # what identifies a record across files (a later file's version replaces an earlier one)
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    day: str | None = None  # the column dating a clinical record (the service date)
    span: tuple[str, str] | None = None  # start/end columns of an eligibility or coverage span
    codes: dict[str, str] = field(default_factory=dict)  # column → code system (PROCEDURE: CPT or HCPCS)

    @property
    def clinical(self) -> bool:
        return self.day is not None

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


_CLAIM_REQUIRED = ("claim_id", "line_number", "cin", "service_date", "billing_npi")
_CLAIM_OPTIONAL = ("claim_form", "record_type", "service_end_date", "rendering_npi", "place_of_service", "type_of_bill",
                   "procedure_code", "modifiers", "diagnosis_codes", "icd10_pcs_codes", "revenue_code",
                   "discharge_status", "security_labels")
_CLAIM_CODES = {"procedure_code": PROCEDURE, "diagnosis_codes": ICD10CM, "icd10_pcs_codes": ICD10PCS}


def _claims(name: str, description: str) -> FeedKind:
    return FeedKind(name, description, "ExplanationOfBenefit", ("claim_id", "line_number"), _CLAIM_REQUIRED,
                    _CLAIM_OPTIONAL, day="service_date", codes=_CLAIM_CODES)


FEED_KINDS: dict[str, FeedKind] = {k.name: k for k in (
    FeedKind("eligibility", "Medi-Cal eligibility spans (the plan's 834/MEDS view)", "Coverage",
             ("cin", "start_date", "aid_code"), ("cin", "birth_date", "sex", "aid_code", "start_date"),
             ("end_date", "dual_status"), span=("start_date", "end_date")),
    FeedKind("other_coverage", "other health coverage, including Medicare (dual eligibility)", "Coverage",
             ("cin", "carrier_code", "coverage_type", "start_date"), ("cin", "carrier_code", "coverage_type", "start_date"),
             ("end_date", "dual_status"), span=("start_date", "end_date")),
    _claims("medical_claims", "professional and institutional claims and encounters of the plan's network"),
    _claims("fee_for_service", "the state's plan data feed: fee-for-service claims"),
    _claims("specialty_mental_health", "the state's plan data feed: specialty mental health services"),
    FeedKind("dental", "dental claims (CDT)", "ExplanationOfBenefit", ("claim_id", "line_number"),
             ("claim_id", "line_number", "cin", "service_date", "procedure_code", "billing_npi"),
             ("diagnosis_codes", "security_labels"), day="service_date",
             codes={"procedure_code": CDT, "diagnosis_codes": ICD10CM}),
    FeedKind("pharmacy", "pharmacy claims", "MedicationDispense", ("claim_id",),
             ("claim_id", "cin", "fill_date", "ndc"),
             ("rxnorm", "days_supply", "quantity", "prescriber_npi", "pharmacy_npi", "security_labels"),
             day="fill_date", codes={"ndc": NDC, "rxnorm": RXNORM}),
    FeedKind("lab_results", "laboratory results (LOINC)", "Observation", ("result_id",),
             ("result_id", "cin", "collected_date", "loinc"),
             ("value", "unit", "interpretation", "result_snomed", "ordering_npi", "security_labels"),
             day="collected_date", codes={"loinc": LOINC, "result_snomed": SNOMED}),
    FeedKind("immunizations", "the state immunization registry (CAIR2)", "Immunization", ("immunization_id",),
             ("immunization_id", "cin", "administered_date", "cvx"), ("ndc", "administering_npi", "security_labels"),
             day="administered_date", codes={"cvx": CVX, "ndc": NDC}),
)}


@dataclass(frozen=True)
class FeedRecord:
    kind: str
    line: int
    cin: str
    key: str
    day: date | None  # clinical records
    start: date | None  # eligibility and coverage spans
    end: date | None
    codes: tuple[tuple[str, str], ...]  # normalised (system, code)
    labels: tuple[str, ...]
    fields: dict[str, str]  # the kind's other columns present in this row (never anything else)


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


class BadHeader(ValueError):
    pass


def parse_date(value: str, column: str) -> date:
    value = value.strip()
    try:
        if len(value) == 8 and value.isascii() and value.isdigit():
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        return date.fromisoformat(value)
    except ValueError:
        raise BadRow(f"{column}: not a date (YYYY-MM-DD)") from None


def _code(system: str, value: str, column: str) -> tuple[str, str]:
    if system == PROCEDURE:
        code = value.strip().upper()
        if _CPT.match(code):
            return CPT, code
        if _HCPCS.match(code):
            return HCPCS, code
        raise BadRow(f"{column}: not a CPT or HCPCS code")
    code = normalise(system, value)
    pattern = _PATTERNS.get(system)
    if pattern is not None and not pattern.match(code):
        raise BadRow(f"{column}: not a valid code of its system")
    return system, code


def header_of(kind: FeedKind, header: list[str]) -> tuple[dict[str, int], list[str]]:
    """Column positions of the kind's columns, and the names of the columns that will be ignored."""
    names = [h.strip().lower() for h in header]
    missing = [c for c in kind.required if c not in names]
    if missing:
        raise BadHeader(f"missing required column(s) for {kind.name}: {', '.join(missing)}")
    positions = {name: i for i, name in enumerate(names) if name in kind.columns}
    return positions, [n for n in names if n not in kind.columns]


def record_of(kind: FeedKind, positions: dict[str, int], row: list[str], line: int) -> FeedRecord:
    values = {c: row[i].strip() for c, i in positions.items() if i < len(row) and row[i].strip()}
    for column in kind.required:
        if column not in values:
            raise BadRow(f"{column}: required")
    cin = values["cin"].upper()
    if not CIN.match(cin):
        raise BadRow("cin: not a Medi-Cal CIN (8 digits then a letter)")
    codes: list[tuple[str, str]] = []
    for column, system in kind.codes.items():
        for value in values.get(column, "").split("|"):
            if value.strip():
                codes.append(_code(system, value, column))
    if kind.clinical and not codes:
        raise BadRow(f"no code in {' or '.join(kind.codes)}")
    day = parse_date(values[kind.day], kind.day) if kind.day else None
    start = end = None
    if kind.span:
        start = parse_date(values[kind.span[0]], kind.span[0])
        end = parse_date(values[kind.span[1]], kind.span[1]) if kind.span[1] in values else None
        if end is not None and end < start:
            raise BadRow(f"{kind.span[1]}: before {kind.span[0]}")
    for column in ("birth_date", "service_end_date"):
        if column in values:
            values[column] = parse_date(values[column], column).isoformat()
    labels = tuple(sorted({v.strip().upper() for v in values.get("security_labels", "").split("|") if v.strip()}))
    key = "|".join(values[c].upper() if c == "cin" else values[c] for c in kind.key)
    kept = {c: v for c, v in values.items() if c not in kind.codes and c not in ("cin", "security_labels")}
    return FeedRecord(kind.name, line, cin, key, day, start, end, tuple(codes), labels, kept)


def _first_row(reader: Iterator[list[str]]) -> list[str]:
    try:
        return next(reader)
    except StopIteration:
        raise BadHeader("the file is empty") from None


def ignored_columns(kind: FeedKind, stream: IO[bytes]) -> list[str]:
    """The file's columns that are not the kind's: never read (minimum necessary); reported with the ingest."""
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=""))
    return header_of(kind, _first_row(reader))[1]


def is_ndjson(stream: io.BufferedReader | IO[bytes]) -> bool:
    peek = getattr(stream, "peek", None)
    head = peek(4) if peek is not None else b""
    return head.lstrip(b"\xef\xbb\xbf \r\n\t")[:1] == b"{"


def read_feed(kind: FeedKind, stream: IO[bytes], wanted: Callable[[str], bool] | None = None,
              ) -> Iterator[FeedRecord | RowError]:
    """Every row of a feed file, in order, as a record or an error. `wanted(cin)` skips other members' rows
    before they are checked (a delivery reads only its assigned lives). Raises BadHeader for an unusable header."""
    if is_ndjson(stream):
        yield from read_fhir_feed(kind, stream, wanted)
        return
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=""))
    positions, _ = header_of(kind, _first_row(reader))
    cin_at = positions["cin"]
    line = 1
    for row in reader:
        line = reader.line_num
        if not row or not any(row):
            continue
        if wanted is not None and (cin_at >= len(row) or not wanted(row[cin_at].strip().upper())):
            continue
        try:
            yield record_of(kind, positions, row, line)
        except BadRow as exc:
            yield RowError(line, str(exc))


# -- FHIR NDJSON ---------------------------------------------------------------------------------------------------
FHIR_KINDS = {"immunizations": "Immunization", "lab_results": "Observation"}


def _cin_of(reference: object) -> str:
    """A CIN from a reference by identifier (`{"identifier": {"value": CIN}}`) or by id (`Patient/CIN`)."""
    if not isinstance(reference, dict):
        return ""
    value = (reference.get("identifier") or {}).get("value") or str(reference.get("reference", "")).rpartition("/")[2]
    return str(value).strip().upper()


def _codes_in(concept: dict[str, Any] | None, system: str) -> str:
    return "|".join(c["code"] for c in (concept or {}).get("coding", []) if c.get("system") == system and c.get("code"))


def _npi_of(items: list[dict[str, Any]] | None) -> str:
    for item in items or []:
        identifier = (item.get("actor") or item).get("identifier") or {}
        if identifier.get("system") == "http://hl7.org/fhir/sid/us-npi":
            return str(identifier.get("value", ""))
    return ""


def fhir_columns(kind: str, resource: dict[str, Any]) -> dict[str, str]:
    """A FHIR resource of the kind, as the kind's CSV columns."""
    labels = "|".join(s.get("code", "") for s in (resource.get("meta") or {}).get("security", []))
    if kind == "immunizations":
        return {"immunization_id": resource.get("id", ""), "cin": _cin_of(resource.get("patient")),
                "administered_date": str(resource.get("occurrenceDateTime", ""))[:10],
                "cvx": _codes_in(resource.get("vaccineCode"), CVX), "ndc": _codes_in(resource.get("vaccineCode"), NDC),
                "administering_npi": _npi_of(resource.get("performer")), "security_labels": labels}
    quantity = resource.get("valueQuantity") or {}
    effective = resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start", "")
    interpretation = next((c.get("code", "") for i in resource.get("interpretation", []) for c in i.get("coding", [])), "")
    return {"result_id": resource.get("id", ""), "cin": _cin_of(resource.get("subject")),
            "collected_date": str(effective)[:10], "loinc": _codes_in(resource.get("code"), LOINC),
            "value": str(quantity.get("value", "")) if quantity else str(resource.get("valueString", "")),
            "unit": str(quantity.get("unit", "")), "interpretation": interpretation,
            "result_snomed": _codes_in(resource.get("valueCodeableConcept"), SNOMED),
            "ordering_npi": _npi_of(resource.get("performer")), "security_labels": labels}


def read_fhir_feed(kind: FeedKind, stream: IO[bytes], wanted: Callable[[str], bool] | None = None,
                   ) -> Iterator[FeedRecord | RowError]:
    resource_type = FHIR_KINDS.get(kind.name)
    if resource_type is None:
        raise BadHeader(f"{kind.name} is taken as CSV only (FHIR NDJSON: {', '.join(FHIR_KINDS)})")
    model = get_fhir_model_class(resource_type)
    positions = {c: i for i, c in enumerate(kind.columns)}
    for line, raw in enumerate(io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace"), start=1):
        if not raw.strip():
            continue
        try:
            resource = jsonsafe.loads(raw)
        except ValueError:  # JsonTooDeep included
            yield RowError(line, "not a JSON object")
            continue
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            yield RowError(line, f"not a FHIR {resource_type}")
            continue
        if wanted is not None and not wanted(_cin_of(resource.get("patient" if kind.name == "immunizations" else "subject"))):
            continue
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            yield RowError(line, f"not a valid FHIR R4 {resource_type} ({describe(exc)})")
            continue
        columns = fhir_columns(kind.name, resource)
        try:
            yield record_of(kind, positions, [columns.get(c, "") for c in kind.columns], line)
        except BadRow as exc:
            yield RowError(line, str(exc))
