"""The qip-share Application: QIP reference data — entities, value-set versions and the sensitivity policy — in
its own event store; value-set code lists are bulk data, kept once by hash in the blob table."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from dsi_shared.blobs import Blob, BlobStore
from dsi_shared.errors import NotFound, PermanentError
from dsi_shared.store import ServiceApplication

from qip_share.policy import check_policy, default_policy
from qip_share.reference import (
    ENTITY_KINDS,
    QipEntity,
    SensitivityPolicy,
    ValueSetCatalog,
    ValueSetVersion,
    codes_digest,
)
from qip_share.valuesets import ParseReport


class Conflict(PermanentError):
    pass


class QipShare(ServiceApplication):
    name = "qipshare"

    def __init__(self, store_url: str, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(store_url, extra_env)
        self.blobs = BlobStore(self)

    # -- entities --------------------------------------------------------------------------------------------
    def register_entity(self, kind: str, name: str, identifiers: dict[str, str], address: str, endpoint: str,
                        community_partners: list[dict[str, Any]]) -> QipEntity:
        if kind not in ENTITY_KINDS:
            raise Conflict(f"kind must be one of {', '.join(ENTITY_KINDS)}")
        if community_partners and kind != "DMPH":
            raise Conflict("only a DMPH has state-approved community partners")
        if not identifiers:
            raise Conflict("at least one identifier is required")
        if self.find(QipEntity.create_id(kind, identifiers), QipEntity) is not None:
            raise Conflict("an entity with this identifier is already registered")
        entity = QipEntity(kind, name, identifiers, address, endpoint, community_partners)
        self.save(entity)
        return entity

    def entity(self, entity_id: UUID) -> QipEntity:
        found = self.find(entity_id, QipEntity)
        if found is None:
            raise NotFound("no such QIP entity")
        return found

    def entities(self) -> list[QipEntity]:
        return [self.entity(i) for i in self.ids_created_with(QipEntity.EntityRegistered)]  # type: ignore[attr-defined]

    # -- value sets ------------------------------------------------------------------------------------------
    def catalog(self) -> ValueSetCatalog:
        return self.find(ValueSetCatalog.create_id(), ValueSetCatalog) or ValueSetCatalog()

    def value_set(self, url: str, version: str) -> ValueSetVersion:
        found = self.find(ValueSetVersion.create_id(url, version), ValueSetVersion)
        if found is None:
            raise NotFound("no such value set version")
        return found

    def codes_of(self, version: ValueSetVersion) -> set[tuple[str, str]]:
        blob = self.blobs.get(version.digest)
        if blob is None:
            raise NotFound("the value set's code list is missing from the blob table")
        return {(system, code) for system, code in json.loads(blob.data)}

    def publish_value_sets(self, report: ParseReport, source: str, now: datetime) -> list[dict[str, Any]]:
        """Each parsed value set becomes a new version (current from now on); the same version with the same codes
        again is no change; the same version with other codes is refused — versions are never rewritten."""
        catalog, changed, results = self.catalog(), [], []
        for parsed in report.value_sets:
            codes = sorted([system, code] for system, code in parsed.codes)
            digest = codes_digest(codes)
            known = self.find(ValueSetVersion.create_id(parsed.url, parsed.version), ValueSetVersion)
            if known is not None:
                if known.digest != digest:
                    raise Conflict(f"value set {parsed.url} version {parsed.version} exists with other codes: "
                                   "publish it as a new version")
                results.append({"url": parsed.url, "version": parsed.version, "codes": len(codes), "status": "unchanged"})
                continue
            self.blobs.put(Blob(digest, len(codes), "application/json", "", json.dumps(codes, separators=(",", ":")).encode()))
            version = ValueSetVersion(parsed.url, parsed.name, parsed.version, len(codes), digest, source, now)
            catalog.adopt(parsed.url, parsed.name, parsed.version, now)
            changed.append(version)
            results.append({"url": parsed.url, "version": parsed.version, "codes": len(codes), "status": "published"})
        if changed:
            self.save(catalog, *changed)
        return results

    # -- sensitivity policy ----------------------------------------------------------------------------------
    def policy(self) -> SensitivityPolicy:
        found = self.find(SensitivityPolicy.create_id(), SensitivityPolicy)
        if found is None:
            raise NotFound("no sensitivity policy published yet")
        return found

    def publish_policy(self, document: dict[str, Any], reason: str) -> bool:
        canonical = check_policy(document)
        policy = self.find(SensitivityPolicy.create_id(), SensitivityPolicy) or SensitivityPolicy()
        try:
            changed = policy.publish(canonical["version"], canonical, reason)
        except ValueError as exc:
            raise Conflict(str(exc)) from None
        if changed:
            self.save(policy)
        return changed

    def ensure_default_policy(self) -> None:
        if self.find(SensitivityPolicy.create_id(), SensitivityPolicy) is None:
            self.publish_policy(default_policy(), "default policy (DOMAIN.md Part B)")
