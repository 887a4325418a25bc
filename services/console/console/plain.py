"""Verdict reasons in plain words, for the people who sent the files (codes stay on the staff pages beside them)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from dsi_shared.plantime import QuarterCalendar

EVENTS = {"A01": "admission", "A02": "transfer", "A03": "discharge", "A04": "registration", "A08": "update",
          "A11": "cancelled admission", "A12": "cancelled transfer", "A13": "cancelled discharge"}
WORDS = {
    "event_time_after_receipt": "the event's time is later than the time the file was received",
    "not_a_member": "the patient was not a plan member on the day of the event",
    "not_enrolled": "the sender was not an enrolled, eligible participant for that day",
    "milestone1_not_achieved": "Milestone 1 was not yet achieved, and only data after it earns",
    "before_data_sharing_start": "the data was captured before your provider type's data-sharing start date",
    "withdrawn": "the data was captured after the participant left the program",
    "no_rules_in_force": "no program rules were in force on that day",
    "earning_rule_forthcoming": "your provider type's earning rule is not published yet",
    "unknown_sending_facility": "the sending facility (MSH-4) is not one registered for a participant",
    "not_hl7": "the file is not HL7 v2",
    "no_qualifying_event": "the file holds no admission, transfer or discharge",
    "unknown_participant": "the file names no known participant",
    "sender_not_bound_to_token": "the file names a sender this connection may not submit for",
}


def money(value: Any) -> str:
    """Dollars as people read them: `$1,234.50`, `-$400.00`, `—` when there is no amount."""
    if value in (None, ""):
        return "—"
    amount = Decimal(str(value))
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def hours_between(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    return int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() // 3600)


def reason_text(reason: str, submission: dict[str, Any], limit_hours: int | None) -> str:
    code, _, detail = reason.partition(":")
    facts = submission.get("facts") or {}
    event = EVENTS.get(str(facts.get("event_type") or ""), "event")
    if code == "late":
        hours = hours_between(facts.get("event_time"), submission.get("received_at"))
        limit = f"; the limit is {limit_hours}" if limit_hours else ""
        return f"received {hours} hours after the {event}{limit}" if hours is not None else f"received too late{limit}"
    if code == "incomplete":
        return f"incomplete: {detail}"
    if code == "not_a_qualifying_event":
        return f"{EVENTS.get(detail, detail)} is not an event this program pays for"
    if code == "duplicate_of":
        return "the same event was already sent in an earlier file"
    if code == "unprocessable":
        return f"the file could not be read ({detail})"
    if code.startswith("earning_rule_does_not_credit"):
        return f"your provider type earns another way ({detail.replace('_', ' ')})"
    return WORDS.get(code, reason.replace("_", " "))


def limit_of(participant: dict[str, Any]) -> int | None:
    """The timeliness window in the participant's rules (hours), when its type earns per file."""
    rule = ((participant.get("schedule") or {}).get("earning_rule")) or {}
    hours = rule.get("timeliness_hours")
    return int(hours) if hours is not None else None


MISSING = {"LOA": "the Letter of Agreement", "DSA": "the Data Sharing Agreement", "HIE": "the HIE participation agreement"}


def missing_for_milestone1(participant: dict[str, Any]) -> list[str]:
    """What a participant still needs for Milestone 1, in words: each agreement unsigned, rejected or unreviewed."""
    if (participant.get("milestone1") or {}).get("achieved"):
        return []
    missing = []
    for kind, label in MISSING.items():
        state = (participant.get("agreements") or {}).get(kind)
        if state is None:
            missing.append(f"sign {label}")
        elif state["status"] == "rejected":
            missing.append(f"sign {label} again: the plan rejected it ({(state.get('review') or {}).get('reason', '')})")
        elif state["status"] != "accepted":
            missing.append(f"{label} is signed and waits for the plan's review")
    return missing


def quarter_of(submission: dict[str, Any], calendar: QuarterCalendar | None) -> str | None:
    """The quarter a file counts in: the one its credit names, else the quarter the HIE received it in (DOMAIN.md
    A4), by the program's calendar; None when it has no credit and no calendar is published yet."""
    credit = submission.get("credit") or {}
    if credit.get("quarter"):
        return str(credit["quarter"])
    if calendar is None:
        return None
    return str(calendar.quarter_at(datetime.fromisoformat(submission["received_at"])))
