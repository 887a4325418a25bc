"""QIP value sets in: a FHIR R4 `ValueSet` with an expansion (validated with fhir.resources), or a CSV of
`value_set_name, value_set_oid, code_system, code` (optional `value_set_version`), the shape of the HEDIS/VSAC
directories. Each value set becomes a set of normalised `(system, code)` pairs. Pure functions."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dsi_shared import jsonsafe
from dsi_shared.jsonsafe import JsonTooDeep
from fhir.resources.R4B.valueset import ValueSet
from pydantic import ValidationError

from qip_share.codes import UnknownCodeSystem, normalise, system_uri

CSV_COLUMNS = ("value_set_name", "value_set_oid", "code_system", "code")
MAX_NAMED_CODES = 100  # codes named in a report; the rest are counted
UNKNOWN_SYSTEM = "unknown code system (use a FHIR URI, an OID or a name such as LOINC, CPT, NDC)"


class BadValueSet(ValueError):
    """The file yields no value set; `errors` names each code it could not use and why."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def capped(errors: list[dict[str, Any]], limit: int = MAX_NAMED_CODES) -> dict[str, Any]:
    """The first `limit` errors and how many more there were (value-set codes are reference data, not PHI)."""
    return {"errors": errors[:limit], "errors_not_shown": max(0, len(errors) - limit)}


@dataclass
class ParsedValueSet:
    url: str  # canonical URL, or urn:oid:<oid> for a CSV row's OID
    name: str
    version: str
    codes: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class ParseReport:
    value_sets: list[ParsedValueSet]
    errors: list[dict[str, Any]]  # {"line"/"at", "system", "code", "reason"}: codes are reference data, not PHI


def from_fhir(data: bytes, default_version: str) -> ParseReport:
    try:
        document = jsonsafe.loads(data, "the ValueSet")
        resource = ValueSet.model_validate(document)
    except JsonTooDeep:
        raise
    except (ValueError, ValidationError) as exc:
        raise BadValueSet(f"not a FHIR R4 ValueSet ({type(exc).__name__})") from None
    if resource.url is None:
        raise BadValueSet("ValueSet.url is required: it names the value set across versions")
    parsed = ParsedValueSet(str(resource.url), resource.name or resource.title or str(resource.url),
                            resource.version or default_version)
    errors: list[dict[str, Any]] = []
    entries: list[tuple[str, str | None, str | None]] = []
    if resource.expansion is not None:
        entries = list(_contains(resource.expansion.contains or [], "expansion.contains"))
    elif resource.compose is not None:  # an unexpanded compose of enumerated concepts is usable as is
        for i, include in enumerate(resource.compose.include or []):
            if include.valueSet or include.filter:
                errors.append({"at": f"compose.include[{i}]", "system": str(include.system or "") or None, "code": None,
                               "reason": "filters and imported value sets need an expansion"})
            entries += [(f"compose.include[{i}].concept[{j}]", include.system, c.code)
                        for j, c in enumerate(include.concept or [])]
    for at, system, code in entries:
        _add(parsed, {"at": at}, system, code, errors)
    if not parsed.codes:
        raise BadValueSet(f"the ValueSet has no usable codes: {_none_used(len(errors))} "
                          "(expansion.contains or compose.include.concept)", errors)
    return ParseReport([parsed], errors)


def _contains(items: Iterable[Any], at: str) -> Iterator[tuple[str, str | None, str | None]]:
    for i, item in enumerate(items):
        if not item.abstract:  # abstract entries group others and are not codes themselves
            yield f"{at}[{i}]", item.system, item.code
        yield from _contains(item.contains or [], f"{at}[{i}].contains")


def _none_used(unusable: int) -> str:
    return f"none of its {unusable} entries could be used" if unusable else "it lists no codes"


def _add(parsed: ParsedValueSet, where: dict[str, Any], system: str | None, code: str | None,
         errors: list[dict[str, Any]]) -> None:
    """Keep the code, or say which one it was and why it could not be used."""
    system, code = (system or "").strip() or None, (code or "").strip() or None
    reason = "missing code system and code" if not system and not code else (
        "missing code system" if not system else "missing code" if not code else None)
    if reason is None:
        try:
            uri = system_uri(str(system))
        except UnknownCodeSystem:
            reason = UNKNOWN_SYSTEM
        else:
            parsed.codes.add((uri, normalise(uri, str(code))))
            return
    errors.append({**where, "system": system, "code": code, "reason": reason})


def from_csv(data: bytes, default_version: str) -> ParseReport:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadValueSet("the CSV is not UTF-8") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BadValueSet(f"missing CSV columns: {', '.join(missing)}")
    sets: dict[str, ParsedValueSet] = {}
    errors: list[dict[str, Any]] = []
    for line, row in enumerate(reader, start=2):
        oid, name = (row.get("value_set_oid") or "").strip(), (row.get("value_set_name") or "").strip()
        if not oid or not name:
            errors.append({"line": line, "system": (row.get("code_system") or "").strip() or None,
                           "code": (row.get("code") or "").strip() or None,
                           "reason": "value_set_name and value_set_oid are required"})
            continue
        url = oid if ":" in oid else f"urn:oid:{oid}"
        version = (row.get("value_set_version") or "").strip() or default_version
        parsed = sets.setdefault(f"{url}|{version}", ParsedValueSet(url, name, version))
        _add(parsed, {"line": line}, row.get("code_system"), row.get("code"), errors)
    usable = [s for s in sets.values() if s.codes]
    if not usable:
        raise BadValueSet(f"the CSV has no usable codes: {_none_used(len(errors))}", errors)
    return ParseReport(usable, errors)
