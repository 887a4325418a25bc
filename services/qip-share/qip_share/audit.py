"""qip-share's part of `dsi audit replay`: every aggregate rebuilt, gaps named (deliveries reproduce on their own:
`dsi audit reproduce`)."""

from __future__ import annotations

from dsi_shared.audit import AuditContext
from dsi_shared.service import AuditReport, ServiceApplication, rebuild_aggregates


def audit(app: ServiceApplication, context: AuditContext) -> AuditReport:
    report = AuditReport()
    rebuild_aggregates(app, report, context)
    return report
