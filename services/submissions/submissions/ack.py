"""HL7 v2 acknowledgements: AA accepted, AE error in content (ERR names the problem), AR rejected."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

_counter = itertools.count(1)
# HL7 table 0357 (message error condition codes)
HL7_ERROR = {"AE": "207^Application internal error^HL70357", "AR": "200^Unsupported message type^HL70357"}
MISSING, DATA_TYPE = "101^Required field missing^HL70357", "102^Data type error^HL70357"
UNKNOWN_KEY = "204^Unknown key identifier^HL70357"  # a sender (MSH-4) the submitter is not bound to
_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-([0-9]{1,3})\b")  # a problem naming its field: "EVN-6 malformed"


def _error(code: str, problem: str) -> tuple[str, str]:
    """(ERR-2 location, ERR-3 condition) for a problem: a field that is there but not of its type is `102`,
    one that is absent `101`; the field named in ERR-2 as SEG^1^n."""
    field = _FIELD.match(problem)
    location = f"{field[1]}^1^{field[2]}" if field else ""
    if code == "AE" and field and "malformed" in problem:
        return location, DATA_TYPE
    if code == "AE" and field and "missing" in problem:
        return location, MISSING
    if code == "AR" and field and "not bound" in problem:
        return location, UNKNOWN_KEY
    return location, HL7_ERROR.get(code, HL7_ERROR["AE"])


def _escape(text: str) -> str:
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("~", "\\R\\")
            .replace("&", "\\T\\"))


def build_ack(code: str, control_id: str, trigger: str = "", receiving_facility: str = "",
              problems: list[str] | None = None, version: str = "2.5.1") -> str:
    """An ACK for one message. `problems` are PHI-free descriptions (segment-field codes)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    ack_id = f"DSI{datetime.now(UTC):%Y%m%d%H%M%S}{next(_counter):06d}"
    segments = [
        f"MSH|^~\\&|DSI|PLAN|HIE|{_escape(receiving_facility)}|{now}||ACK^{_escape(trigger)}^ACK|{ack_id}|P|{version}",
        f"MSA|{code}|{_escape(control_id)}",
    ]
    for problem in (problems or [])[:20] if code != "AA" else []:
        location, condition = _error(code, problem)
        segments.append(f"ERR||{location}|{condition}|E||||{_escape(problem)}")
    return "\r".join(segments) + "\r"
