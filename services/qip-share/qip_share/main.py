"""Composition root of the qip-share service: QIP reference data (entities, value sets, sensitivity policy)."""

from __future__ import annotations

from dsi_shared.service import AuditFacts, AuditReport, ServiceApplication, ServiceSpec, rebuild_aggregates

from qip_share.api import routes
from qip_share.application import QipShare


def audit(app: ServiceApplication, _: AuditFacts) -> AuditReport:
    report = AuditReport()
    rebuild_aggregates(app, report)
    return report


service = ServiceSpec(
    name="qip-share",
    default_port=8105,
    application=QipShare,
    routes=routes,
    audit=audit,
    audit_order=50,
    on_start=lambda app: app.ensure_default_policy(),  # type: ignore[attr-defined]
)
