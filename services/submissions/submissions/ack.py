"""HL7 v2 acknowledgements: AA accepted, AE error in content (ERR names the problem), AR rejected."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

_counter = itertools.count(1)
HL7_ERROR = {"AE": "207^Application internal error^HL70357", "AR": "200^Unsupported message type^HL70357"}


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
        segments.append(f"ERR|||{HL7_ERROR.get(code, HL7_ERROR['AE'])}|E||||{_escape(problem)}")
    return "\r".join(segments) + "\r"
