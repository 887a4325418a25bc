"""Minimum necessary, "to the extent allowed by law": which records are withheld, and why (DOMAIN.md Part B).
Pure functions over the versioned policy document (`sensitivity_policy.json` holds the versions shipped with the
service, oldest first).

A category withholds a record, unless a legal basis it names is recorded for the member on the record's date, when:
- the record's feed kind is one of its `feed_kinds` (the whole feed; 2025.1 used it for specialty mental health);
- the record carries one of its `security_labels`;
- its billing or rendering NPI is one of its `provider_npis` (e.g. 42 CFR Part 2 programs);
- its `record_type` column is one of its `record_types` (e.g. a psychotherapy note);
- one of its codes is in the category's code lists (exact codes or prefixes);
and, for a category with `under_age`, the member is younger than that on the record's date (unknown age: younger).
Security labels are counted by the delivery as labels seen; the document's `security_labels_recorded` names those
(PSY, ETH, STD, SEX, SDV in 2026.1) that are recorded only, never a reason to withhold.
Every field is optional; a document published earlier is read exactly as it was, so past deliveries reproduce."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qip_share.codes import UnknownCodeSystem, normalise, system_uri

DEFAULT_POLICY_FILE = Path(__file__).with_name("sensitivity_policy.json")


class BadPolicy(ValueError):
    pass


def shipped_policies() -> list[dict[str, Any]]:
    """Every policy version shipped with the service, oldest first."""
    return [dict(v) for v in json.loads(DEFAULT_POLICY_FILE.read_text())["versions"]]


def default_policy() -> dict[str, Any]:
    """The newest shipped version."""
    return shipped_policies()[-1]


def check_policy(document: dict[str, Any]) -> dict[str, Any]:
    """The document in canonical form (systems as FHIR URIs, codes normalised, security labels upper-cased as feeds
    give them), or BadPolicy naming the problem. Only a document being published is checked: one published before
    is read exactly as stored (2025.1 was stored with `42CFRPart2` as written, which no upper-cased feed label
    matched; its deliveries reproduce that way)."""
    if not isinstance(document.get("version"), str) or not document["version"]:
        raise BadPolicy("version is required")
    categories = document.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise BadPolicy("categories are required")
    canonical: dict[str, Any] = {}
    for name, category in categories.items():
        if not isinstance(category, dict) or not category.get("legal_reference"):
            raise BadPolicy(f"category {name}: legal_reference is required")
        lists = []
        for entry in category.get("codes", []):
            try:
                system = system_uri(entry["system"])
            except (KeyError, UnknownCodeSystem):
                raise BadPolicy(f"category {name}: every code list needs a known system") from None
            lists.append({"system": system,
                          "codes": sorted(normalise(system, c) for c in entry.get("codes", [])),
                          "prefixes": sorted(normalise(system, p) for p in entry.get("prefixes", []))})
        for listed in ("security_labels", "provider_npis", "record_types", "feed_kinds", "legal_bases_that_permit"):
            values = category.get(listed, [])
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise BadPolicy(f"category {name}: {listed} must be a list of strings")
        canonical[name] = {**category, "codes": lists}
        if "security_labels" in category:  # feeds upper-case labels (HL7 codes are matched case-insensitively)
            canonical[name]["security_labels"] = sorted({v.upper() for v in category["security_labels"]})
    recorded = document.get("security_labels_recorded", [])
    if not isinstance(recorded, list) or not all(isinstance(v, str) and v for v in recorded):
        raise BadPolicy("security_labels_recorded must be a list of strings")
    if "security_labels_recorded" in document:
        return {**document, "categories": canonical, "security_labels_recorded": sorted({v.upper() for v in recorded})}
    return {**document, "categories": canonical}


def withheld_by(policy: dict[str, Any], codes: Iterable[tuple[str, str]], security_labels: Iterable[str],
                feed_kind: str, age: int | None, legal_bases: Iterable[str], npis: Iterable[str] = (),
                record_type: str | None = None) -> str | None:
    """The first policy category that withholds this record (None: it may be shared). A category is lifted only
    by one of the legal bases it names, recorded for this member."""
    codes, labels, bases = list(codes), set(security_labels), set(legal_bases)
    providers, kind_of_record = {n.strip() for n in npis}, (record_type or "").strip().lower()
    for name, category in sorted(policy["categories"].items()):
        if bases & set(category.get("legal_bases_that_permit", [])):
            continue
        if "under_age" in category and age is not None and age >= category["under_age"]:
            continue  # an unknown age is treated as a minor's: withholding is the safe side
        if feed_kind in category.get("feed_kinds", []) or labels & set(category.get("security_labels", [])):
            return str(name)
        if providers & set(category.get("provider_npis", [])):
            return str(name)
        if kind_of_record and kind_of_record in {t.lower() for t in category.get("record_types", [])}:
            return str(name)
        for entry in category["codes"]:
            for system, code in codes:
                if system == entry["system"] and (code in entry["codes"]
                                                  or any(code.startswith(p) for p in entry["prefixes"])):
                    return str(name)
    return None

