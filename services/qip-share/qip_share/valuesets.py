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


class BadValueSet(ValueError):
    pass


@dataclass
class ParsedValueSet:
    url: str  # canonical URL, or urn:oid:<oid> for a CSV row's OID
    name: str
    version: str
    codes: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class ParseReport:
    value_sets: list[ParsedValueSet]
    errors: list[dict[str, Any]]  # {"line"/"at", "reason"}: never the row's values


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
                errors.append({"at": f"compose.include[{i}]", "reason": "filters and imported value sets need an expansion"})
            entries += [(f"compose.include[{i}].concept[{j}]", include.system, c.code)
                        for j, c in enumerate(include.concept or [])]
    for at, system, code in entries:
        _add(parsed, {"at": at}, system, code, errors)
    if not parsed.codes:
        raise BadValueSet("the ValueSet has no usable codes (expansion.contains or compose.include.concept)")
    return ParseReport([parsed], errors)


def _contains(items: Iterable[Any], at: str) -> Iterator[tuple[str, str | None, str | None]]:
    for i, item in enumerate(items):
        if not item.abstract:  # abstract entries group others and are not codes themselves
            yield f"{at}[{i}]", item.system, item.code
        yield from _contains(item.contains or [], f"{at}[{i}].contains")


def _add(parsed: ParsedValueSet, where: dict[str, Any], system: str | None, code: str | None,
         errors: list[dict[str, Any]]) -> None:
    if not system or not code or not code.strip():
        errors.append({**where, "reason": "system and code are required"})
        return
    try:
        uri = system_uri(system)
    except UnknownCodeSystem as exc:
        errors.append({**where, "reason": str(exc)})
        return
    parsed.codes.add((uri, normalise(uri, code)))


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
            errors.append({"line": line, "reason": "value_set_name and value_set_oid are required"})
            continue
        url = oid if ":" in oid else f"urn:oid:{oid}"
        version = (row.get("value_set_version") or "").strip() or default_version
        parsed = sets.setdefault(f"{url}|{version}", ParsedValueSet(url, name, version))
        _add(parsed, {"line": line}, row.get("code_system"), row.get("code"), errors)
    if not sets:
        raise BadValueSet("the CSV holds no value set rows")
    return ParseReport([s for s in sets.values() if s.codes], errors)
