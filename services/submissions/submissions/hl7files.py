"""HL7 v2 payloads → combined files → facts (DOMAIN.md A3, skilled nursing), with python-hl7.

A payload (an MLLP frame, an HTTP body, a NATS notification, an FHS/BHS batch) holds one or more messages. It is
split into *combined files*: each ADT message with the messages that follow it (ORU^R01, RDE^O11/O01, anything
else). Each combined file is one submission. Facts are taken here (python-hl7 parses; it does not validate);
which of them make a file complete, qualifying or a cancel is the rules version's (`submissions.domain`).
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import hl7
import hl7.containers
import hl7.util
from dsi_shared.members import CIN

from submissions.hl7time import BadTimestamp, parse_ts

# python-hl7 logs the raw field (a name, a birth date, a member id) when it meets a malformed escape sequence or a
# segment before MSH, under loggers named by its files' paths: every record dropped (a filter, which a later
# `logging.config.dictConfig` — uvicorn's — leaves in place, unlike `disabled`), so no PHI reaches the logs. The
# reasons we record for a file are our own, PHI-free.
for _module in (hl7.util, hl7.containers):
    logging.getLogger(_module.__file__).addFilter(lambda _record: False)

SUPPORTED_VERSIONS = re.compile(r"^2\.(3|4|5|6|7|8)(\.[0-9]+)?$")
_VERSION_SHAPE = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,2}){0,2}$")  # safe to name in an answer (never free text)
_MESSAGE_TYPE = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_ADT_EVENT = re.compile(r"^A[0-9]{2}$")
_CONTROL_ID = re.compile(r"[A-Za-z0-9._\-]{1,199}")
_MSH_START = re.compile(r"(?:^|[\r\n\x0b])MSH")  # an MSH segment, not "MSH" inside a field
ACK_TYPES = {"AL", "NE", "ER", "SU"}  # HL7 table 0155 (MSH-15, MSH-16)
# HL7 table 0211 (MSH-18) → the Python codec; anything else is read as UTF-8 (and recorded)
CHARSETS = {"ASCII": "ascii", "ISO IR6": "ascii", "8859/1": "latin-1", "ISO IR100": "latin-1", "8859/2": "iso8859-2",
            "8859/3": "iso8859-3", "8859/4": "iso8859-4", "8859/5": "iso8859-5", "8859/6": "iso8859-6",
            "8859/7": "iso8859-7", "8859/8": "iso8859-8", "8859/9": "iso8859-9", "8859/15": "iso8859-15",
            "UNICODE UTF-8": "utf-8", "ISO IR192": "utf-8"}
MEDICAID_ID = "MA"
BATCH_SEGMENTS = {"FHS", "BHS", "BTS", "FTS"}
VISIT_FIELDS = (("PV1", 19, "PV1-19"), ("PID", 18, "PID-18"), ("PV1", 50, "PV1-50"))


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
    visit_source: str | None = None  # PV1-19, else PID-18 (account number), else PV1-50 (alternate visit id)
    event_time: datetime | None = None
    event_time_source: str | None = None
    accept_ack: str = ""  # MSH-15 (table 0155; "" when absent or not in the table)
    application_ack: str = ""  # MSH-16
    charset: str = ""  # MSH-18 (first repetition) as sent
    segments: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)  # e.g. "EVN-6 malformed" → AE
    warnings: list[str] = field(default_factory=list)  # leniencies: read anyway, recorded, ERR severity W
    fatal: str | None = None  # e.g. "unsupported HL7 version 2.2" → AR

    @property
    def kind(self) -> str:
        return f"{self.message_type}^{self.trigger}"


@dataclass(frozen=True)
class Decoded:
    text: str
    codec: str  # the character set the bytes were read with (a Python codec name)
    charset: str  # MSH-18 as sent ("" when absent)
    leniencies: tuple[str, ...] = ()


def msh_fields(head: str) -> list[str]:
    """The first MSH segment's fields (index n = MSH-(n+1)), split on its own field separator; [] without one."""
    found = _MSH_START.search(head)
    at = found.end() - 3 if found else -1
    if at < 0 or len(head) < at + 4:
        return []
    return re.split(r"[\r\n]", head[at:], maxsplit=1)[0].split(head[at + 3])


def control_id_of(head: bytes | str) -> str:
    """MSH-10 from the start of a payload, when it can be read (plain characters only; else empty)."""
    fields = msh_fields(head.decode("latin-1") if isinstance(head, bytes) else head[:4096])
    candidate = fields[9].strip() if len(fields) > 9 else ""
    return candidate if _CONTROL_ID.fullmatch(candidate) else ""


def decode(data: bytes) -> Decoded:
    """Bytes → text in the character set MSH-18 declares (table 0211), else UTF-8; bytes that are not valid in it are
    read as Windows-1252 (ISO 8859-1 where 1252 has no character), as US senders mean, and that is recorded. Never
    fails: whether it is HL7 at all is `split_payload`'s question."""
    leniencies: list[str] = []
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        leniencies.append("UTF-8 byte order mark ignored")
    fields = msh_fields(data[:4096].decode("latin-1"))
    charset = fields[17].split("~")[0].split("^")[0].strip() if len(fields) > 17 else ""
    codec = CHARSETS.get(charset.upper(), "utf-8") if charset else "utf-8"
    if charset and charset.upper() not in CHARSETS:
        leniencies.append("MSH-18 character set not in HL7 table 0211: read as UTF-8")
    try:
        return Decoded(data.decode(codec), codec, charset, tuple(leniencies))
    except UnicodeDecodeError:
        said = f"not valid {codec} as MSH-18 declares" if charset else f"not valid {codec} and no MSH-18"
    for fallback in ("windows-1252", "iso-8859-1"):
        try:
            return Decoded(data.decode(fallback), fallback, charset, (*leniencies, f"{said}: read as {fallback}"))
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


@dataclass(frozen=True)
class Payload:
    """A payload read once (the MLLP listener's check that it is HL7 at all, then judging, then the group's
    prefetch): its text as decoded, its messages with batch envelopes removed and what was read leniently, or why
    it is not HL7 (`unreadable`)."""

    decoded: Decoded
    messages: tuple[str, ...] = ()
    leniencies: tuple[str, ...] = ()
    unreadable: str | None = None


def read_payload(data: bytes) -> Payload:
    """`decode`, then `split_payload`; never fails."""
    decoded = decode(data)
    try:
        messages, leniencies = split_payload(decoded.text)
    except NotHL7 as exc:
        return Payload(decoded, unreadable=str(exc))
    return Payload(decoded, tuple(messages), tuple(leniencies))


def split_messages(text: str) -> list[str]:
    return split_payload(text)[0]


def split_payload(text: str) -> tuple[list[str], list[str]]:
    """The messages of a payload, batch envelopes removed, and what was accepted leniently: segments ended by LF or
    CR LF (read as CR), whitespace around segments or blank lines (ignored)."""
    leniencies = ["segments ended by LF or CR LF: read as CR"] if "\n" in text else []
    normalised = text.replace("\r\n", "\r").replace("\n", "\r")
    messages: list[list[str]] = []
    trimmed = False
    for raw in normalised.split("\r"):
        segment = raw.strip("\x0b\x1c")
        if segment != (stripped := segment.strip()):
            segment, trimmed = stripped, True
        if not segment:
            continue
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
    if trimmed:
        leniencies.append("whitespace around segments ignored")
    return ["\r".join(m) for m in messages], leniencies


@dataclass(frozen=True)
class Fields:
    """A parsed message read once: its segment names in order and the first segment of each kind, so that a field is
    one indexed step away (python-hl7's `message["PV1.F19.R1.C1"]` parses the path and scans every segment at each
    lookup, which cost as much as parsing the message)."""

    names: tuple[str, ...]
    first: Mapping[str, hl7.Segment]

    @classmethod
    def of(cls, message: hl7.Message) -> Fields:
        names = tuple(str(segment[0]) for segment in message)
        first: dict[str, hl7.Segment] = {}
        try:
            for segment in message:
                name = segment[0][0]  # what python-hl7's `message.segments(name)` compares
                if isinstance(name, str):
                    first.setdefault(name, segment)
        except IndexError:  # an empty segment: python-hl7's every lookup fails on it, so none is found
            first = {}
        return cls(names, MappingProxyType(first))

    def value(self, segment_id: str, field_number: int, repetition: int = 1, component: int = 1) -> str:
        """What `message["SEG.Fn.Rr.Cc"]` reads (python-hl7's own extraction: its compatibility rules, unescaped),
        stripped; "" when the segment or the field is absent or the path does not fit."""
        segment = self.first.get(segment_id)
        if segment is None:
            return ""
        try:
            value = segment.extract_field(1, field_number, repetition, component, 1)
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
        facts.fatal, facts.control_id = "invalid MSH delimiters", control_id_of(text)
        return facts
    try:
        message = hl7.parse(text)
    except Exception:  # noqa: BLE001 - python-hl7 raises several kinds on broken structure
        facts.fatal, facts.control_id = "unparseable HL7 structure", control_id_of(text)
        return facts
    fields = Fields.of(message)
    facts.segments = fields.names
    _header(fields, facts)
    if "PID" in facts.segments:
        facts.cin = _medicaid_id(fields, facts)
    else:
        facts.problems.append("PID missing")
    for segment_id, number, name in VISIT_FIELDS:
        if segment_id in facts.segments and (visit := fields.value(segment_id, number)):
            facts.visit, facts.visit_source = visit, name
            break
    if "PV1" in facts.segments:
        facts.facility = fields.value("PV1", 3, 1, 4) or None
    if facts.message_type == "ADT":
        _adt_facts(fields, facts)
    elif facts.kind == "ORU^R01":
        _require(fields, facts, ("OBR", 4), ("OBX", 3), ("OBX", 11))
    elif facts.kind in {"RDE^O11", "RDE^O01"}:  # RDE^O01: the same pharmacy order from HL7 2.3/2.3.1 senders
        _require(fields, facts, ("ORC", 1), ("RXE", 2), ("RXE", 3), ("RXE", 5))
    return facts


def _header(fields: Fields, facts: Message) -> None:
    """MSH: what the message is, who sent it, how it wants to be answered. What makes it unprocessable (no or an
    unknown message type or event, a version before 2.3) is `fatal` (AR); a missing required field a problem (AE)."""
    facts.message_type = fields.value("MSH", 9, 1, 1)
    facts.trigger = fields.value("MSH", 9, 1, 2)
    facts.control_id = fields.value("MSH", 10)
    facts.version = fields.value("MSH", 12, 1, 1)
    facts.charset = fields.value("MSH", 18, 1, 1)
    namespace, universal = fields.value("MSH", 4, 1, 1), fields.value("MSH", 4, 1, 2)
    facts.sending_facility = namespace or universal
    facts.sending_facility_ids = tuple(i for i in (namespace, universal) if i)
    for number in (7, 10, 12):
        if not fields.value("MSH", number):
            facts.problems.append(f"MSH-{number} missing")
    if not facts.sending_facility:
        facts.problems.append("MSH-4 missing")
    for number, name, attribute in ((15, "MSH-15", "accept_ack"), (16, "MSH-16", "application_ack")):
        value = fields.value("MSH", number).upper()
        if value in ACK_TYPES:
            setattr(facts, attribute, value)
        elif value:
            facts.warnings.append(f"{name} not in HL7 table 0155: ignored")
    if not facts.message_type:
        facts.fatal = "MSH-9 missing"
    elif not _MESSAGE_TYPE.match(facts.message_type):
        facts.fatal = "unsupported message type"
    elif facts.message_type == "ADT" and not _ADT_EVENT.match(facts.trigger):
        facts.fatal = "unsupported event code"
    elif facts.version and not SUPPORTED_VERSIONS.match(facts.version):
        named = f" {facts.version}" if _VERSION_SHAPE.match(facts.version) else ""
        facts.fatal = f"unsupported HL7 version{named}"


def _medicaid_id(fields: Fields, facts: Message) -> str | None:
    """PID-3 repetition with identifier type MA (Medicaid number), else a lone CIN-shaped id."""
    try:
        repetitions = fields.first["PID"][3]
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


def _adt_facts(fields: Fields, facts: Message) -> None:
    if "EVN" not in facts.segments:
        facts.problems.append("EVN missing")
    if "PV1" not in facts.segments:
        facts.problems.append("PV1 missing")
        return
    if not facts.visit:  # still this patient's event at this time: keyed on them (issue 13)
        facts.warnings.append("no visit id (PV1-19, PID-18, PV1-50): the event is keyed on the patient and its time")
    elif facts.visit_source != "PV1-19":
        facts.warnings.append(f"PV1-19 empty: visit id from {facts.visit_source}")
    if not facts.facility and not facts.sending_facility:
        facts.problems.append("PV1-3 facility missing")
    # Timeliness runs from the event: EVN-6 (occurred), else PV1-44/45 (admit/discharge), else EVN-2 (recorded);
    # never MSH-7, which the sender controls.
    by_trigger = {"A01": ("PV1", 44), "A03": ("PV1", 45)}.get(facts.trigger)
    candidates = [("EVN", 6)] + ([by_trigger] if by_trigger else []) + [("EVN", 2)]
    for segment_id, number in candidates:
        name = f"{segment_id}-{number}"
        raw = fields.value(segment_id, number)
        if not raw:
            continue
        try:
            facts.event_time, facts.event_time_source = parse_ts(raw.split("^")[0]), name
            return
        except BadTimestamp:
            facts.problems.append(f"{name} malformed")
            return
    facts.problems.append("EVN-2 missing")


def _require(fields: Fields, facts: Message, *required: tuple[str, int]) -> None:
    for segment_id, number in required:
        if not fields.value(segment_id, number):
            facts.problems.append(f"{segment_id}-{number} missing")


@dataclass
class CombinedFile:
    """One ADT message and the ORU/RDE messages for it (or, with no ADT, whatever arrived on its own)."""

    messages: list[Message]

    @property
    def adt(self) -> Message | None:
        return next((m for m in self.messages if m.message_type == "ADT"), None)

    def message_facts(self) -> list[dict[str, Any]]:
        """Per message, in order (the ADT first when there is one): kind, control id, sender, version, its own
        problems (field codes, never values), what was accepted leniently, and whether it is for the ADT's patient
        and visit (a message or an ADT without a visit id is matched on the patient)."""
        adt = self.adt
        ordered = [adt, *(m for m in self.messages if m is not adt)] if adt is not None else self.messages
        return [{"type": m.kind, "control_id": m.control_id, "sending_facility": m.sending_facility,
                 "version": m.version, "problems": list(m.problems),
                 **({"warnings": list(m.warnings)} if m.warnings else {}),
                 "belongs": adt is None or m is adt or (
                     m.cin == adt.cin and (not m.visit or not adt.visit or m.visit == adt.visit))}
                for m in ordered]


def combined_files(messages: list[Message]) -> list[CombinedFile]:
    files: list[CombinedFile] = []
    for message in messages:
        if message.message_type == "ADT" or not files:
            files.append(CombinedFile([message]))
        else:
            files[-1].messages.append(message)
            _sent_by_the_adt(files[-1].adt, message)
    return files


def _sent_by_the_adt(adt: Message | None, message: Message) -> None:
    """An associated message with a blank MSH-4 (optional in HL7): the file's ADT already names the sender, so it is
    taken as that sender's (and bound like it), recorded as a warning, not a problem."""
    if adt is None or not adt.sending_facility_ids or "MSH-4 missing" not in message.problems:
        return
    message.problems.remove("MSH-4 missing")
    message.warnings.append("MSH-4 missing: the ADT's sending facility stands")
    message.sending_facility_ids = adt.sending_facility_ids
