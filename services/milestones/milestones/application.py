"""The milestones Application."""

from __future__ import annotations

from uuid import UUID

from dsi_shared.errors import NotFound
from dsi_shared.store import ServiceApplication
from eventsourcing.application import AggregateNotFoundError

from milestones.domain import ParticipantProgress


class Milestones(ServiceApplication):
    name = "milestones"

    def progress(self, participant_id: UUID) -> ParticipantProgress:
        try:
            return self.repository.get(ParticipantProgress.create_id(participant_id))
        except AggregateNotFoundError:
            raise NotFound("no milestones recorded for this participant") from None

    def progress_or_new(self, participant_id: UUID) -> ParticipantProgress:
        try:
            return self.progress(participant_id)
        except NotFound:
            return ParticipantProgress(participant_id)
