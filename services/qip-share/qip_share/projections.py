"""The deliveries read model (issue 15 §1): one row per delivery, its list view (without feeds and recipients)
stored as JSON beside the columns `GET /deliveries` filters and sorts on."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows
from dsi_shared.store import ServiceApplication

from qip_share.ledger import Delivery

METADATA = sa.MetaData()
DELIVERIES = sa.Table(
    "rm_deliveries", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the order they were recorded in
    sa.Column("entity_id", sa.String(36), nullable=False),
    sa.Column("requirement", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("transaction_time", sa.String(40), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("rm_deliveries_entity", "entity_id", "seq", "id"),
    sa.Index("rm_deliveries_requirement", "requirement", "seq", "id"),
)


def rows(_: ServiceApplication, delivery: Any) -> Rows:
    from qip_share.deliveries_api import delivery_view

    if not isinstance(delivery, Delivery):
        return {}
    view = {k: v for k, v in delivery_view(delivery).items() if k not in ("feeds", "recipients")}
    return {DELIVERIES.name: [{
        "entity_id": view["entity_id"], "requirement": view["requirement"], "status": view["status"],
        "transaction_time": str(view["transaction_time"] or ""),
        "body": json.dumps(view, separators=(",", ":")),
    }]}


PROJECTION = Projection("deliveries", 1, METADATA, (Delivery,), rows)
