"""Composition root of the enrollment service."""

from __future__ import annotations

from dsi_shared.service import AuditFacts, AuditReport, ServiceApplication, ServiceSpec, rebuild_aggregates

from enrollment.api import routes
from enrollment.application import Enrollment
from enrollment.contract import CONTRACT
from enrollment.domain import Participant
from enrollment.handlers import SUBSCRIPTIONS


def audit(app: ServiceApplication, facts: AuditFacts) -> AuditReport:
    """Rebuild every participant from its events; hand names to the services audited after us."""
    assert isinstance(app, Enrollment)
    report = AuditReport()
    names = facts.setdefault("participants", {})
    for participant in rebuild_aggregates(app, report, facts):
        if isinstance(participant, Participant):
            names[str(participant.id)] = participant.legal_name
            signed = [kind for kind in ("LOA", "DSA", "HIE") if participant.agreement(kind)]
            accepted = [kind for kind in ("LOA", "DSA", "HIE") if participant.accepted(kind)]
            report.rows[str(participant.id)] = {"name": participant.legal_name, "agreements": "+".join(signed) or "-",
                                                "accepted": "+".join(accepted) or "-", "status": participant.status}
    return report


service = ServiceSpec(
    name="enrollment",
    default_port=8101,
    application=Enrollment,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    audit_order=10,
    on_start=lambda app: app.ensure_default_rules(),  # type: ignore[attr-defined]
)
