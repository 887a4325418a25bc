"""The paid-participants read model (issue 15 §1): one row per payment account, what its participant was paid in
all, for `GET /payments/participants` (the console's "amount paid" filter) to filter and sort without loading
accounts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows
from dsi_shared.store import ServiceApplication

from payments.domain import PaymentAccount

METADATA = sa.MetaData()
PAID = sa.Table(
    "rm_paid_participants", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),  # the account's id
    sa.Column("seq", sa.BigInteger, nullable=False),  # the order the accounts were opened in
    sa.Column("participant_id", sa.String(36), nullable=False, unique=True),
    sa.Column("paid_cents", sa.BigInteger, nullable=False),
    sa.Column("payments", sa.Integer, nullable=False),
    sa.Index("rm_paid_participants_paid", "paid_cents", "id"),
)


def rows(_: ServiceApplication, account: Any) -> Rows:
    if not isinstance(account, PaymentAccount):
        return {}
    return {PAID.name: [{"participant_id": str(account.participant_id), "paid_cents": int(account.total_paid * 100),
                         "payments": len(account.payments)}]}


PROJECTION = Projection("paid_participants", 1, METADATA, (PaymentAccount,), rows)
