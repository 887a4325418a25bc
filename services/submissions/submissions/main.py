"""Composition root of the submissions service: store, handlers, HTTP, and the MLLP listener."""

from __future__ import annotations

import os

from dsi_shared.service import ServiceApplication, ServiceSpec

from submissions.api import routes
from submissions.application import Submissions
from submissions.audit import audit
from submissions.contract import CONTRACT
from submissions.handlers import SUBSCRIPTIONS
from submissions.metrics import observe
from submissions.mllp import MllpListener
from submissions.projections import PROJECTION
from submissions.whatif import what_if


def mllp_listener(app: ServiceApplication) -> MllpListener:
    assert isinstance(app, Submissions)
    return MllpListener(app, int(os.environ.get("SUBMISSIONS_MLLP_PORT", "2575")),
                        os.environ.get("DSI_HTTP_HOST", "127.0.0.1"))


service = ServiceSpec(
    name="submissions",
    default_port=8102,
    application=Submissions,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    observe=observe,
    servers=(mllp_listener,),
    what_if=what_if,
    projections=(PROJECTION,),
)
