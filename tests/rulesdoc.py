"""The packaged program rules document, for tests: the book every service starts with, and amended versions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from dsi_shared.rulebook import RuleBook, RulesDocument

PACKAGED_PATH = Path(__file__).resolve().parents[1] / "services/enrollment/enrollment/program_rules.json"


def packaged() -> dict[str, Any]:
    """A fresh copy of the shipped document (DOMAIN.md A5 as published)."""
    return copy.deepcopy(json.loads(PACKAGED_PATH.read_text()))


def amended(version: str, effective_from: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The packaged document as a new version: `changes` maps dotted paths (`provider_types.skilled_nursing.
    data_sharing_starts`) to new values."""
    document = packaged()
    document["version"], document["effective_from"] = version, effective_from
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = document
        for key in parents:
            target = target[key]
        target[leaf] = value
    return document


def book(*documents: dict[str, Any]) -> RuleBook:
    """The packaged version, then `documents`, in publication order."""
    return RuleBook((RulesDocument.model_validate(packaged()),
                     *(RulesDocument.model_validate(d) for d in documents)))
