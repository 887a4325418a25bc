"""Minimum necessary, "to the extent allowed by law": which records are withheld, and why (DOMAIN.md Part B).
Pure functions over the versioned policy document (`sensitivity_policy.json` is its first version)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qip_share.codes import UnknownCodeSystem, normalise, system_uri

DEFAULT_POLICY_FILE = Path(__file__).with_name("sensitivity_policy.json")


class BadPolicy(ValueError):
    pass


def default_policy() -> dict[str, Any]:
    return dict(json.loads(DEFAULT_POLICY_FILE.read_text()))


def check_policy(document: dict[str, Any]) -> dict[str, Any]:
    """The document in canonical form (systems as FHIR URIs, codes normalised), or BadPolicy naming the problem."""
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
        canonical[name] = {**category, "codes": lists}
    return {**document, "categories": canonical}


def withheld_by(policy: dict[str, Any], codes: Iterable[tuple[str, str]], security_labels: Iterable[str],
                feed_kind: str, age: int | None, legal_bases: Iterable[str]) -> str | None:
    """The first policy category that withholds this record (None: it may be shared). A category is lifted only
    by one of the legal bases it names, recorded for this member."""
    codes, labels, bases = list(codes), set(security_labels), set(legal_bases)
    for name, category in sorted(policy["categories"].items()):
        if bases & set(category.get("legal_bases_that_permit", [])):
            continue
        if "under_age" in category and age is not None and age >= category["under_age"]:
            continue  # an unknown age is treated as a minor's: withholding is the safe side
        if feed_kind in category.get("feed_kinds", []) or labels & set(category.get("security_labels", [])):
            return str(name)
        for entry in category["codes"]:
            for system, code in codes:
                if system == entry["system"] and (code in entry["codes"]
                                                  or any(code.startswith(p) for p in entry["prefixes"])):
                    return str(name)
    return None
