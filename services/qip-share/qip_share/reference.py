"""QIP reference data as aggregates: entities (DPH/DMPH and a DMPH's community partners), value-set versions
(never rewritten; the catalog says which version is current) and the versioned sensitivity policy."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

ENTITY_KINDS = ("DPH", "DMPH")
# The legal basis for each recipient of a delivery (DOMAIN.md Part B), recorded with every delivery made under
# the current selection rules.
ENTITY_BASIS = ("45 CFR 164.506(c)(4): the QIP entity's own quality assessment and improvement, as a covered entity "
                "and network provider with a relationship with the member")
PARTNER_COVERED_BASIS = ("45 CFR 164.506(c)(4): a state-approved community partner that is itself a covered entity, "
                         "for its quality assessment and improvement")
PARTNER_BA_BASIS = ("through the DMPH, as its business associate (45 CFR 164.502(e), 164.504(e)): a state-approved "
                    "community partner that is not itself a covered entity")


def qip_id(path: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/dsi/qip/{path}")


def codes_digest(codes: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(codes, separators=(",", ":")).encode()).hexdigest()


class QipEntity(Aggregate):
    @staticmethod
    def create_id(kind: str, identifiers: dict[str, str]) -> UUID:
        """One entity per kind and primary identifier (the first by name, e.g. `npi`)."""
        name, value = sorted(identifiers.items())[0]
        return qip_id(f"entity/{kind}/{name.lower()}:{value.strip().upper()}")

    @event("EntityRegistered")
    def __init__(self, kind: str, name: str, identifiers: dict[str, str], address: str, endpoint: str,
                 community_partners: list[dict[str, Any]], participating: bool = True) -> None:
        """`participating`: the state lists the entity as a participating DPH/DMPH system. Entities registered
        before the flag existed were registered as participants, hence the default."""
        self.kind, self.name, self.identifiers = kind, name, identifiers
        self.address, self.endpoint, self.community_partners = address, endpoint, community_partners
        self.participating = participating
        self.participation: list[dict[str, Any]] = []

    def change_participation(self, participating: bool, reason: str, recorded_by: str, recorded_at: datetime) -> bool:
        if participating == self.participating:
            return False
        self.participation_changed(participating=participating, reason=reason, recorded_by=recorded_by,
                                   recorded_at=recorded_at)
        return True

    @event("ParticipationChanged")
    def participation_changed(self, participating: bool, reason: str, recorded_by: str, recorded_at: datetime) -> None:
        self.participating = participating
        self.participation.append({"participating": participating, "reason": reason, "recorded_by": recorded_by,
                                   "recorded_at": recorded_at})

    def change_partners(self, partners: list[dict[str, Any]], reason: str) -> None:
        if partners != self.community_partners:
            self.partners_changed(community_partners=partners, reason=reason)

    @event("CommunityPartnersChanged")
    def partners_changed(self, community_partners: list[dict[str, Any]], reason: str) -> None:
        self.community_partners = community_partners

    @property
    def recipients(self) -> list[dict[str, Any]]:
        """Who receives a delivery for this entity: itself, and for a DMPH its state-approved partners — each
        with the legal basis it receives the data under (a partner that is not itself a covered entity receives
        it through the DMPH, as the DMPH's business associate)."""
        return [{"name": self.name, "address": self.address, "endpoint": self.endpoint, "role": self.kind,
                 "legal_basis": ENTITY_BASIS},
                *({**p, "role": "community_partner", "covered_entity": bool(p.get("covered_entity", False)),
                   "legal_basis": PARTNER_COVERED_BASIS if p.get("covered_entity") else PARTNER_BA_BASIS}
                  for p in self.community_partners)]


class ValueSetVersion(Aggregate):
    """One version of one value set (its normalised codes by hash). A new version is a new aggregate."""

    @staticmethod
    def create_id(url: str, value_set_version: str) -> UUID:
        return qip_id(f"value-set/{url}|{value_set_version}")

    @event("ValueSetPublished")
    def __init__(self, url: str, name: str, value_set_version: str, code_count: int, digest: str, source: str,
                 published_at: datetime) -> None:
        """`digest`: SHA-256 of the sorted `[system, code]` list, which is kept in the blob table under it."""
        self.url, self.name, self.value_set_version, self.code_count = url, name, value_set_version, code_count
        self.digest, self.source, self.published_at = digest, source, published_at


class ValueSetCatalog(Aggregate):
    """Which version of each value set is current (the latest published), and every version ever published."""

    @staticmethod
    def create_id() -> UUID:
        return qip_id("value-set-catalog")

    @event("CatalogStarted")
    def __init__(self) -> None:
        self.current: dict[str, str] = {}  # url → version
        self.history: dict[str, list[str]] = {}
        self.names: dict[str, str] = {}

    def adopt(self, url: str, name: str, version: str, at: datetime) -> None:
        if self.current.get(url) != version:
            self.version_adopted(url=url, name=name, version=version, adopted_at=at)

    @event("ValueSetVersionAdopted")
    def version_adopted(self, url: str, name: str, version: str, adopted_at: datetime) -> None:
        self.current[url] = version
        self.names[url] = name
        self.history.setdefault(url, []).append(version)


class SensitivityPolicy(Aggregate):
    """The versioned withholding policy (DOMAIN.md Part B): categories, each with its legal reference, code lists
    (exact codes or prefixes), security labels, feed kinds and optional age limit."""

    @staticmethod
    def create_id() -> UUID:
        return qip_id("sensitivity-policy")

    @event("PolicyStarted")
    def __init__(self) -> None:
        self.versions: dict[str, dict[str, Any]] = {}
        self.current_version: str | None = None

    def publish(self, version: str, document: dict[str, Any], reason: str) -> bool:
        known = self.versions.get(version)
        if known is not None:
            if known != document:
                raise ValueError(f"policy version {version} exists with different content: publish a new version")
            return False
        self.policy_published(version=version, document=document, reason=reason)
        return True

    @event("PolicyPublished")
    def policy_published(self, version: str, document: dict[str, Any], reason: str) -> None:
        self.versions[version] = document
        self.current_version = version

    @property
    def current(self) -> dict[str, Any]:
        assert self.current_version is not None
        return self.versions[self.current_version]
