"""Dead letters (`dsi.dead-letter.<service>`): what operators see and replay (`dsi ops dead-letters`, and each
service's own `/dead-letters` routes).

A dead letter keeps the original message's body and its reason; listing shows the reason, subject and consumer,
never the body (it may carry PHI). Operators (`dsi ops`, NATS user ops) replay by republishing the body on its
original subject (headers `Dsi-Replay-Of` and a fresh `Nats-Msg-Id`): every consumer's tracking makes a relayed event
it already processed a no-op, so only the consumer that failed applies it. A service replays its own in process
(`TrackingConsumer.apply_dead_letter`), since its NATS user may not publish on the subjects it consumes. Either way
the replay is recorded on `dsi.dead-letter.replayed.<service>` (before 2026-12: `dsi.dead-letter.replayed`, still
read). Every read is filtered to the subjects it needs (`bus.read_all`), so a service's NATS user is granted its own
dead letters and the replay records only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from dsi_shared.bus import Naming, read_all

STREAM = "DSI_DEAD_LETTERS"
LETTERS = "dsi.dead-letter.{service}"
REPLAYED = "dsi.dead-letter.replayed.{service}"
REPLAYED_BEFORE = "dsi.dead-letter.replayed"  # every service's replay records in one subject, as first written


class NoSuchDeadLetter(LookupError):
    pass


@dataclass(frozen=True)
class DeadLetter:
    sequence: int
    at: datetime
    service: str
    original_subject: str
    consumer: str
    deliveries: int
    reason: str
    replayed: bool
    trace_id: str | None = None  # the failed message's trace (W3C `traceparent`), when it carried one


def trace_id_of(headers: dict[str, str]) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), or None when absent or malformed."""
    parts = headers.get("traceparent", "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return None if parts[1] == "0" * 32 else parts[1]


def letter(sequence: int, at: datetime, owner: str, headers: dict[str, str], replayed: bool) -> DeadLetter:
    """A dead letter as its headers describe it (never its body)."""
    return DeadLetter(sequence, at, owner, headers.get("Dsi-Original-Subject", "?"), headers.get("Dsi-Consumer", "?"),
                      int(headers.get("Dsi-Deliveries", "0")), headers.get("Dsi-Reason", "?"), replayed,
                      trace_id_of(headers))


def read_letter(message: Msg, owner: str, replayed: bool = False) -> DeadLetter:
    return letter(message.metadata.sequence.stream, message.metadata.timestamp, owner, message.headers or {}, replayed)


async def letters_of(js: JetStreamContext, naming: Naming, service: str, timeout: float = 2.0) -> AsyncIterator[Msg]:
    """One service's dead-letter messages (bodies included, for an in-process replay), oldest first."""
    async for message in read_all(js, naming.subject(LETTERS.format(service=service)), timeout):
        yield message


async def replayed_of(js: JetStreamContext, naming: Naming, service: str, timeout: float = 2.0) -> set[int]:
    """The sequences of the service's dead letters recorded as replayed (the early shared subject included)."""
    done: set[int] = set()
    for subject in (REPLAYED.format(service=service), REPLAYED_BEFORE):
        async for message in read_all(js, naming.subject(subject), timeout):
            done.add(int((message.headers or {}).get("Dsi-Replay-Of", "0")))
    return done


async def list_dead_letters(js: JetStreamContext, naming: Naming, service: str | None = None,
                            timeout: float = 2.0) -> list[DeadLetter]:
    """Every dead letter (of one service, or all), oldest first, with whether it was replayed."""
    if service is not None:
        replayed = await replayed_of(js, naming, service, timeout)
        return [read_letter(m, service, m.metadata.sequence.stream in replayed)
                async for m in letters_of(js, naming, service, timeout)]
    letters: list[tuple[Msg, str]] = []
    done: set[int] = set()
    async for message in read_all(js, naming.subject("dsi.dead-letter.>"), timeout):
        subject = naming.contract_subject(message.subject)
        if subject == REPLAYED_BEFORE or subject.startswith(REPLAYED_BEFORE + "."):
            done.add(int((message.headers or {}).get("Dsi-Replay-Of", "0")))
        else:
            letters.append((message, subject.removeprefix("dsi.dead-letter.")))
    return [read_letter(m, owner, m.metadata.sequence.stream in done) for m, owner in letters]


async def record_replayed(js: JetStreamContext, naming: Naming, service: str, sequence: int, operator: str) -> None:
    """That a dead letter was replayed, and by whom (once: the same record twice is one message)."""
    await js.publish(naming.subject(REPLAYED.format(service=service)), b"", headers={
        "Dsi-Replay-Of": str(sequence), "Dsi-Operator": operator, "Nats-Msg-Id": f"replayed:{sequence}"})


async def replay_dead_letter(js: JetStreamContext, naming: Naming, sequence: int, operator: str) -> DeadLetter:
    """Republish one dead letter's original message (operators: NATS user ops); record that it was replayed."""
    try:
        raw = await js.get_msg(naming.stream(STREAM), sequence)
    except nats.js.errors.NotFoundError:
        raise NoSuchDeadLetter(f"no dead letter at sequence {sequence}") from None
    headers = raw.headers or {}
    if "Dsi-Original-Subject" not in headers:
        raise NoSuchDeadLetter(f"sequence {sequence} is not a dead letter")
    original = headers["Dsi-Original-Subject"]
    forwarded = {k: v for k, v in headers.items() if k in {"traceparent", "tracestate"}}
    await js.publish(naming.subject(original), raw.data or b"", headers={
        **forwarded, "Dsi-Replay-Of": str(sequence),
        "Nats-Msg-Id": f"replay:{headers.get('Dsi-Consumer', '?')}:{headers.get('Dsi-Original-Sequence', sequence)}"})
    service = naming.contract_subject(raw.subject or "").removeprefix("dsi.dead-letter.")
    await record_replayed(js, naming, service, sequence, operator)
    return letter(sequence, datetime.now().astimezone(), service, headers, replayed=True)
