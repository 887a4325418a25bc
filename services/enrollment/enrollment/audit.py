"""Enrollment's part of `dsi audit replay`: every participant rebuilt from its events, as rows."""

from __future__ import annotations

from dsi_shared.audit import AuditContext
from dsi_shared.service import AuditReport, ServiceApplication, rebuild_aggregates

from enrollment.application import Enrollment
from enrollment.domain import Participant


def audit(app: ServiceApplication, context: AuditContext) -> AuditReport:
    """Rebuild every participant from its events: name, agreements signed and accepted, status."""
    assert isinstance(app, Enrollment)
    report = AuditReport()
    for participant in rebuild_aggregates(app, report, context):
        if isinstance(participant, Participant):
            signed = [kind for kind in ("LOA", "DSA", "HIE") if participant.agreement(kind)]
            accepted = [kind for kind in ("LOA", "DSA", "HIE") if participant.accepted(kind)]
            report.rows[str(participant.id)] = {"name": participant.legal_name, "agreements": "+".join(signed) or "-",
                                                "accepted": "+".join(accepted) or "-", "status": participant.status}
    return report
