"""Submissions' response bodies, as the OpenAPI documents them (issue 12 §5). Never the payload: a submission
shows its hash and the facts read from it. `facts` are the message's own (their keys depend on the message type),
so they stay an open object on purpose."""

from __future__ import annotations

from typing import Any

from dsi_shared.http import Answer
from pydantic import Field


class SubmissionView(Answer):
    id: str
    participant_id: str | None
    channel: str
    received_at: str
    content_type: str
    payload_sha256: str
    hie_submission_id: str | None
    facts: dict[str, Any]
    verdict: str | None
    reasons: list[str]
    amount: str
    credit: dict[str, Any] | None
    reversed_by: str | None
    history: list[dict[str, Any]] = Field(description="each judgment in order, with what caused a judgment again")


class MessageAnswerView(Answer):
    control_id: str | None = Field(description="MSH-10 of the message answered")
    ack_code: str = Field(description="AA, AE or AR")
    problems: list[str]
    submission_id: str | None
    verdict: str | None
    reasons: list[str]
    ack: str = Field(description="the HL7 v2 ACK message (ER7)")


class Hl7Answer(Answer):
    messages: list[MessageAnswerView]
    submissions: list[SubmissionView]


class SubmissionList(Answer):
    participant_id: str
    submissions: list[SubmissionView]
    count: int = Field(description="every submission matching the filters (this page holds at most `limit`)")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
