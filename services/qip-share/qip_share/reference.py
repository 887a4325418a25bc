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
                 community_partners: list[dict[str, Any]]) -> None:
        self.kind, self.name, self.identifiers = kind, name, identifiers
        self.address, self.endpoint, self.community_partners = address, endpoint, community_partners

    def change_partners(self, partners: list[dict[str, Any]], reason: str) -> None:
        if partners != self.community_partners:
            self.partners_changed(community_partners=partners, reason=reason)

    @event("CommunityPartnersChanged")
    def partners_changed(self, community_partners: list[dict[str, Any]], reason: str) -> None:
        self.community_partners = community_partners

    @property
    def recipients(self) -> list[dict[str, Any]]:
        """Who receives a delivery for this entity: itself, and for a DMPH its state-approved partners."""
        return [{"name": self.name, "address": self.address, "endpoint": self.endpoint, "role": self.kind},
                *({**p, "role": "community_partner"} for p in self.community_partners)]


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
