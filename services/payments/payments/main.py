"""Composition root of the payments service."""

from __future__ import annotations

from dsi_shared.service import ServiceSpec

from payments.api import routes
from payments.application import Payments
from payments.audit import audit
from payments.contract import CONTRACT
from payments.handlers import SUBSCRIPTIONS
from payments.metrics import observe
from payments.projections import PROJECTION
from payments.whatif import what_if

service = ServiceSpec(
    name="payments",
    default_port=8104,
    application=Payments,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    observe=observe,
    what_if=what_if,
    projections=(PROJECTION,),
    after=("milestones",),  # re-derives the payouts from what milestones reports owed
)
