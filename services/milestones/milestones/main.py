"""Composition root of the milestones service."""

from __future__ import annotations

from dsi_shared.service import ServiceSpec

from milestones.api import routes
from milestones.application import Milestones
from milestones.audit import audit
from milestones.commands import COMMANDS
from milestones.contract import CONTRACT
from milestones.handlers import SUBSCRIPTIONS
from milestones.projections import PROJECTION
from milestones.whatif import what_if

service = ServiceSpec(
    name="milestones",
    default_port=8103,
    application=Milestones,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    after=("submissions",),  # what-if: the files as submissions judges them under each book
    what_if=what_if,
    commands=COMMANDS,
    projections=(PROJECTION,),
)
