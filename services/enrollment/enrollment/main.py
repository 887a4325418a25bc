"""Composition root of the enrollment service."""

from __future__ import annotations

from dsi_shared.service import ServiceSpec

from enrollment.api import routes
from enrollment.application import Enrollment
from enrollment.audit import audit
from enrollment.commands import COMMANDS
from enrollment.contract import CONTRACT
from enrollment.handlers import SUBSCRIPTIONS
from enrollment.projections import PROJECTION

service = ServiceSpec(
    name="enrollment",
    default_port=8101,
    application=Enrollment,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    on_start=lambda app: app.ensure_default_rules(),  # type: ignore[attr-defined]
    commands=COMMANDS,
    projections=(PROJECTION,),
)
