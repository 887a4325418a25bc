"""Composition root of the qip-share service: store, relay and HTTP health, no handlers yet."""

from __future__ import annotations

from dsi_shared.http import Auth
from dsi_shared.service import AuditFacts, AuditReport, ServiceApplication, ServiceSpec, rebuild_aggregates
from fastapi import APIRouter

from qip_share.application import QipShare


def routes(_: ServiceApplication, __: Auth) -> APIRouter:
    return APIRouter()


def audit(app: ServiceApplication, _: AuditFacts) -> AuditReport:
    report = AuditReport()
    rebuild_aggregates(app, report)
    return report


service = ServiceSpec(name="qip-share", default_port=8105, application=QipShare, routes=routes, audit=audit, audit_order=50)
