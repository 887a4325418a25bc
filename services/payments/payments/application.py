"""The payments Application."""

from __future__ import annotations

from uuid import UUID

from dsi_shared.errors import NotFound
from dsi_shared.store import ServiceApplication
from eventsourcing.application import AggregateNotFoundError

from payments.domain import PaymentAccount


class Payments(ServiceApplication):
    name = "payments"

    def account(self, participant_id: UUID) -> PaymentAccount:
        try:
            return self.repository.get(PaymentAccount.create_id(participant_id))
        except AggregateNotFoundError:
            raise NotFound("no payment account for this participant") from None

    def account_or_new(self, participant_id: UUID) -> PaymentAccount:
        try:
            return self.account(participant_id)
        except NotFound:
            return PaymentAccount(participant_id)
