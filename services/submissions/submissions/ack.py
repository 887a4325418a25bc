"""HL7 v2 acknowledgements (HL7 v2.5.1 chapter 2): `AA` accepted, `AE` error in content, `AR` rejected; `CA`/`CR`
commit acknowledgements in enhanced mode. One ERR per problem: ERR-2 where (SEG^1^field), ERR-3 what (HL7 table
0357), ERR-4 severity (`E`, or `W` for what was read leniently); senders before 2.5 get ERR-1 (ELD) and MSA-3
instead. The ACK speaks the sender's version (MSH-12) and character set (MSH-18, and the bytes' own encoding).

Enhanced mode over MLLP (one answer per message on the sender's connection; we cannot open one back to it): with
MSH-15 and MSH-16 both empty, original mode (the application ACK); else the application ACK when MSH-16 asks for
it (AL; ER on AE/AR; SU on AA) — it also says the message was committed —, otherwise a commit ACK when MSH-15
asks for it (AL; ER on CR; SU on CA), otherwise nothing, as the sender asked. HTTP always answers the application
ACK.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_counter = itertools.count(1)
VERSION = "2.5.1"
_ANSWERABLE = re.compile(r"^2\.([0-9])(?:\.([0-9]{1,2}))?$")

# HL7 table 0357 (message error condition codes)
SEGMENT_SEQUENCE = "100^Segment sequence error^HL70357"
MISSING = "101^Required field missing^HL70357"
DATA_TYPE = "102^Data type error^HL70357"
TABLE_VALUE = "103^Table value not found^HL70357"
UNSUPPORTED_TYPE = "200^Unsupported message type^HL70357"
UNSUPPORTED_EVENT = "201^Unsupported event code^HL70357"
UNSUPPORTED_VERSION = "203^Unsupported version id^HL70357"
UNKNOWN_KEY = "204^Unknown key identifier^HL70357"  # an unknown sending facility, or one the sender is not bound to
INTERNAL = "207^Application internal error^HL70357"  # only our own failures (and our frame size limit)

_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-([0-9]{1,3})\b")
_SEGMENT = re.compile(r"^([A-Z][A-Z0-9]{2}) missing$")
# what a problem says → (ERR-3, ERR-2 when the problem names no field); the first match wins
_CONDITIONS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"not bound|unknown sending facility"), UNKNOWN_KEY, "MSH^1^4"),
    (re.compile(r"^unsupported HL7 version"), UNSUPPORTED_VERSION, "MSH^1^12"),
    (re.compile(r"^unsupported message type"), UNSUPPORTED_TYPE, "MSH^1^9^1^1"),
    (re.compile(r"^unsupported event code"), UNSUPPORTED_EVENT, "MSH^1^9^1^2"),
    (re.compile(r"^application error|^frame larger than"), INTERNAL, ""),
    (re.compile(r"not in HL7 table"), TABLE_VALUE, ""),
    (re.compile(r"^invalid MSH delimiters"), DATA_TYPE, "MSH^1^2"),
    (re.compile(r"malformed"), DATA_TYPE, ""),
    (re.compile(r"^no visit id"), MISSING, "PV1^1^19"),
    (re.compile(r"missing|has no|empty"), MISSING, ""),
    (re.compile(r"MSH|HL7|<VT>|structure"), SEGMENT_SEQUENCE, ""),  # not HL7 as far as the structure goes
)


@dataclass(frozen=True)
class Reply:
    """How the sender's message is to be answered: its trigger and facility, version (MSH-12), character set
    (MSH-18, and the codec its bytes were read with), and what it asks for (MSH-15 accept, MSH-16 application)."""

    trigger: str = ""
    facility: str = ""
    version: str = VERSION
    charset: str = ""
    codec: str = "utf-8"
    accept_ack: str = ""
    application_ack: str = ""


def condition(problem: str) -> tuple[str, str]:
    """(ERR-2 location, ERR-3 condition) of a problem (PHI-free text naming a segment-field, e.g. "EVN-6 malformed")."""
    field = _FIELD.match(problem)
    segment = _SEGMENT.match(problem)
    location = f"{field[1]}^1^{field[2]}" if field else (segment[1] if segment else "")
    if segment:
        return location, SEGMENT_SEQUENCE
    for pattern, code, default in _CONDITIONS:
        if pattern.search(problem):
            return location or default, code
    return location, INTERNAL


def answer_version(version: str) -> tuple[str, tuple[int, int]]:
    """The version to answer in: the sender's when it is a 2.x version, else 2.5.1."""
    match = _ANSWERABLE.match(version.strip())
    if not match:
        return VERSION, (5, 1)
    return version.strip(), (int(match[1]), int(match[2] or 0))


def _escape(text: str) -> str:
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("~", "\\R\\")
            .replace("&", "\\T\\"))


def _err(problem: str, severity: str, modern: bool) -> str:
    location, code = condition(problem)
    if modern:
        return f"ERR||{location}|{code}|{severity}||||{_escape(problem)}"
    identifier, text, system = code.split("^")
    eld = "^".join([*location.split("^"), "", "", ""][:3])  # ELD: segment^sequence^field^code (CE as subcomponents)
    return f"ERR|{eld}^{identifier}&{text}&{system}"


def build_ack(code: str, control_id: str, trigger: str = "", receiving_facility: str = "",
              problems: list[str] | None = None, version: str = VERSION, *, warnings: list[str] | None = None,
              charset: str = "") -> str:
    """An ACK for one message. `problems` (ERR-4 `E`) and `warnings` (`W`, 2.5 and later only) are PHI-free
    descriptions naming segment-fields."""
    now = datetime.now(UTC)
    answered, (major, minor) = answer_version(version)
    modern = major >= 5
    kind = "ACK" + (f"^{_escape(trigger)}" if trigger else "") + ("^ACK" if (major, minor) >= (3, 1) else "")
    errors = (problems or [])[:20] if code not in {"AA", "CA"} else []
    header = (f"MSH|^~\\&|DSI|PLAN|HIE|{_escape(receiving_facility)}|{now:%Y%m%d%H%M%S}+0000||{kind}|"
              f"DSI{now:%Y%m%d%H%M%S}{next(_counter):06d}|P|{answered}")
    segments = [header + (f"||||||{_escape(charset)}" if charset else ""),
                f"MSA|{code}|{_escape(control_id)}" + (f"|{_escape(errors[0])}" if errors and not modern else "")]
    segments += [_err(problem, "E", modern) for problem in errors]
    if modern:
        segments += [_err(warning, "W", modern) for warning in (warnings or [])[:20]]
    return "\r".join(segments) + "\r"


def ack_for(reply: Reply, code: str, control_id: str, problems: list[str] | None = None,
            warnings: list[str] | None = None) -> str:
    return build_ack(code, control_id, reply.trigger, reply.facility, problems, reply.version, warnings=warnings,
                     charset=reply.charset)


def _asks(condition: str, success: bool) -> bool:
    return condition == "AL" or (condition == "ER" and not success) or (condition == "SU" and success)


def mllp_acknowledgement(reply: Reply, code: str, control_id: str, application_ack: str,
                         problems: list[str]) -> str | None:
    """What MLLP sends back for a message answered `code` (see the module's doc): the application ACK, a commit ACK,
    or None."""
    if not reply.accept_ack and not reply.application_ack:
        return application_ack
    if _asks(reply.application_ack, code == "AA"):
        return application_ack
    committed = code != "AR"  # AE: recorded, with problems; AR: refused (type, version, sender)
    if _asks(reply.accept_ack, committed):
        return ack_for(reply, "CA" if committed else "CR", control_id, None if committed else problems)
    return None
