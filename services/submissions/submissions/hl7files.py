"""HL7 v2 payloads → combined files → facts (DOMAIN.md A3, skilled nursing), with python-hl7.

A payload (an MLLP frame, an HTTP body, a NATS notification, an FHS/BHS batch) holds one or more messages. It is
split into *combined files*: each ADT message with the messages that follow it (ORU^R01, RDE^O11/O01, anything
else). Each combined file is one submission. Facts are taken here (python-hl7 parses; it does not validate);
which of them make a file complete, qualifying or a cancel is the rules version's (`submissions.domain`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import hl7
from dsi_shared.members import CIN

from submissions.hl7time import BadTimestamp, parse_ts

SUPPORTED_VERSIONS = re.compile(r"^2\.(3|4|5|6|7|8)(\.[0-9]+)?$")
MEDICAID_ID = "MA"
BATCH_SEGMENTS = {"FHS", "BHS", "BTS", "FTS"}


class NotHL7(ValueError):
    """The payload cannot be read as HL7 v2 at all (AR)."""


@dataclass
class Message:
    """One parsed HL7 message: what we need of it, and the problems found (segment-field codes, never values)."""

    index: int
    message_type: str = ""
    trigger: str = ""
    control_id: str = ""
    version: str = ""
    sending_facility: str = ""  # MSH-4.1 namespace id (or the universal id when there is none)
    sending_facility_ids: tuple[str, ...] = ()
    cin: str | None = None
    visit: str | None = None
    facility: str | None = None  # PV1-3.4
    event_time: datetime | None = None
    event_time_source: str | None = None
    segments: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)  # e.g. "PV1-19 missing" → AE
    fatal: str | None = None  # e.g. "unsupported HL7 version" → AR

    @property
    def kind(self) -> str:
        return f"{self.message_type}^{self.trigger}"


def split_messages(text: str) -> list[str]:
    """The messages of a payload, batch envelopes removed. Segment separators normalised to CR."""
    normalised = text.replace("\r\n", "\r").replace("\n", "\r")
    messages: list[list[str]] = []
    for segment in filter(None, (s.strip("\x0b\x1c") for s in normalised.split("\r"))):
        name = segment[:3]
        if name in BATCH_SEGMENTS:
            continue
        if name == "MSH":
            messages.append([segment])
        elif messages:
            messages[-1].append(segment)
        else:
            raise NotHL7("the payload does not start with an MSH segment")
    if not messages:
        raise NotHL7("no HL7 message found")
    return ["\r".join(m) for m in messages]


def _value(message: Any, path: str) -> str:
    try:
        value = message[path]
    except (KeyError, IndexError, TypeError, ValueError):
        return ""
    return str(value or "").strip()


def parse_message(index: int, text: str) -> Message:
    facts = Message(index=index)
    if len(text) < 8 or not text.startswith("MSH"):
        facts.fatal = "no MSH segment"
        return facts
    field_separator = text[3]
    if field_separator.isalnum() or len(set(text[3:8])) < 5:
        facts.fatal = "invalid MSH delimiters"
        return facts
    try:
        message = hl7.parse(text)
    except Exception:  # noqa: BLE001 - python-hl7 raises several kinds on broken structure
        facts.fatal = "unparseable HL7 structure"
        return facts
    facts.segments = tuple(str(segment[0]) for segment in message)
    facts.message_type = _value(message, "MSH.F9.R1.C1")
    facts.trigger = _value(message, "MSH.F9.R1.C2")
    facts.control_id = _value(message, "MSH.F10")
    facts.version = _value(message, "MSH.F12.R1.C1")
    namespace, universal = _value(message, "MSH.F4.R1.C1"), _value(message, "MSH.F4.R1.C2")
    facts.sending_facility = namespace or universal
    facts.sending_facility_ids = tuple(i for i in (namespace, universal) if i)
    for path, name in (("MSH.F7", "MSH-7"), ("MSH.F9", "MSH-9"), ("MSH.F10", "MSH-10"), ("MSH.F12", "MSH-12")):
        if not _value(message, path):
            facts.problems.append(f"{name} missing")
    if not facts.sending_facility:
        facts.problems.append("MSH-4 missing")
    if facts.version and not SUPPORTED_VERSIONS.match(facts.version):
        facts.fatal = "unsupported HL7 version"
    if "PID" in facts.segments:
        facts.cin = _medicaid_id(message, facts)
    else:
        facts.problems.append("PID missing")
    if "PV1" in facts.segments:
        facts.visit = _value(message, "PV1.F19.R1.C1") or None
        facts.facility = _value(message, "PV1.F3.R1.C4") or None
    if facts.message_type == "ADT":
        _adt_facts(message, facts)
    elif facts.kind == "ORU^R01":
        _require(message, facts, ("OBR.F4", "OBR-4"), ("OBX.F3", "OBX-3"), ("OBX.F11", "OBX-11"))
    elif facts.kind in {"RDE^O11", "RDE^O01"}:  # RDE^O01: the same pharmacy order from HL7 2.3/2.3.1 senders
        _require(message, facts, ("ORC.F1", "ORC-1"), ("RXE.F2", "RXE-2"), ("RXE.F3", "RXE-3"), ("RXE.F5", "RXE-5"))
    return facts


def _medicaid_id(message: Any, facts: Message) -> str | None:
    """PID-3 repetition with identifier type MA (Medicaid number), else a lone CIN-shaped id."""
    try:
        repetitions = message.segment("PID")[3]
    except (KeyError, IndexError):
        facts.problems.append("PID-3 missing")
        return None
    items = list(repetitions)
    if items and all(isinstance(item, hl7.Repetition) for item in items):
        identifiers = [[str(component) for component in item] for item in items]
    else:
        identifiers = [[str(component) for component in items]]
    candidates: list[str] = []
    for parts in identifiers:
        ident, id_type = (parts[0] if parts else "").strip(), (parts[4] if len(parts) > 4 else "").strip()
        if id_type == MEDICAID_ID:
            candidates.insert(0, ident)
        elif CIN.match(ident.upper()):
            candidates.append(ident)
    if not candidates:
        facts.problems.append("PID-3 has no Medi-Cal CIN (identifier type MA)")
        return None
    cin = candidates[0].upper()[:9]
    if not CIN.match(cin):
        facts.problems.append("PID-3 Medi-Cal CIN malformed")
        return None
    return cin


def _adt_facts(message: Any, facts: Message) -> None:
    if "EVN" not in facts.segments:
        facts.problems.append("EVN missing")
    if "PV1" not in facts.segments:
        facts.problems.append("PV1 missing")
        return
    if not facts.visit:
        facts.problems.append("PV1-19 missing")
    if not facts.facility and not facts.sending_facility:
        facts.problems.append("PV1-3 facility missing")
    # Timeliness runs from the event: EVN-6 (occurred), else PV1-44/45 (admit/discharge), else EVN-2 (recorded);
    # never MSH-7, which the sender controls.
    by_trigger = {"A01": ("PV1.F44", "PV1-44"), "A03": ("PV1.F45", "PV1-45")}.get(facts.trigger)
    candidates = [("EVN.F6", "EVN-6")] + ([by_trigger] if by_trigger else []) + [("EVN.F2", "EVN-2")]
    for path, name in candidates:
        raw = _value(message, path)
        if not raw:
            continue
        try:
            facts.event_time, facts.event_time_source = parse_ts(raw.split("^")[0]), name
            return
        except BadTimestamp:
            facts.problems.append(f"{name} malformed")
            return
    facts.problems.append("EVN-2 missing")


def _require(message: Any, facts: Message, *fields: tuple[str, str]) -> None:
    for path, name in fields:
        if not _value(message, path):
            facts.problems.append(f"{name} missing")


@dataclass
class CombinedFile:
    """One ADT message and the ORU/RDE messages for it (or, with no ADT, whatever arrived on its own)."""

    messages: list[Message]

    @property
    def adt(self) -> Message | None:
        return next((m for m in self.messages if m.message_type == "ADT"), None)

    def message_facts(self) -> list[dict[str, Any]]:
        """Per message, in order (the ADT first when there is one): kind, control id, sender, version, its own
        problems (field codes, never values) and whether it is for the ADT's patient and visit."""
        adt = self.adt
        ordered = [adt, *(m for m in self.messages if m is not adt)] if adt is not None else self.messages
        return [{"type": m.kind, "control_id": m.control_id, "sending_facility": m.sending_facility,
                 "version": m.version, "problems": list(m.problems),
                 "belongs": adt is None or m is adt or (m.cin == adt.cin and (not m.visit or m.visit == adt.visit))}
                for m in ordered]


def combined_files(messages: list[Message]) -> list[CombinedFile]:
    files: list[CombinedFile] = []
    for message in messages:
        if message.message_type == "ADT" or not files:
            files.append(CombinedFile([message]))
        else:
            files[-1].messages.append(message)
    return files
