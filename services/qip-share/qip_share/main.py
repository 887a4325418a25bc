"""Composition root of the qip-share service: QIP reference data, feeds, assignments, deliveries, disclosures."""

from __future__ import annotations

from dsi_shared.service import ServiceApplication, ServiceSpec

from qip_share.api import routes
from qip_share.application import QipShare
from qip_share.audit import audit
from qip_share.commands import COMMANDS
from qip_share.contract import CONTRACT
from qip_share.handlers import SUBSCRIPTIONS
from qip_share.projections import PROJECTION


def start(app: ServiceApplication) -> None:
    assert isinstance(app, QipShare)
    app.ensure_default_policy()
    app.complete_interrupted_deliveries()


service = ServiceSpec(
    name="qip-share",
    default_port=8105,
    application=QipShare,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    on_start=start,
    commands=COMMANDS,
    projections=(PROJECTION,),
)
