"""Stores for unit tests of one service's application, on SQLite."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from submissions.application import Submissions
from submissions.domain import FacilityIndex, MemberFacts, ParticipantFacts

from tests.rulesdoc import book


def snf_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *members: MemberFacts) -> Iterator[Submissions]:
    """A Submissions store (SQLite) that knows one SNF past Milestone 1 sending as SUNNY_SNF, `members`, and the
    packaged rules."""
    monkeypatch.setenv("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())  # payloads are stored encrypted
    store = Submissions(f"sqlite:///{tmp_path / 'submissions.db'}")
    participant = ParticipantFacts(uuid4())
    participant.note_registration(provider_type="skilled_nursing", npi="1234567893", sending_facilities=["SUNNY_SNF"])
    participant.note_eligibility(eligible=True, rule_version="2024.1")
    participant.note_milestone1(achieved_at=datetime(2024, 6, 1, tzinfo=UTC))
    store.save(participant, FacilityIndex("SUNNY_SNF", participant.participant_id), *members)
    monkeypatch.setattr(store, "rulebook", book)
    yield store
    store.close()
