"""Dead letters (`dsi.dead-letter.<service>`): what operators see and replay (`dsi ops dead-letters`).

A dead letter keeps the original message's body and its reason; listing shows the reason, subject and consumer,
never the body (it may carry PHI). Replaying republishes the body on its original subject (headers
`Dsi-Replay-Of` and a fresh `Nats-Msg-Id`): every consumer's tracking makes a relayed event it already processed
a no-op, so only the consumer that failed applies it. The replay is recorded on `dsi.dead-letter.replayed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import nats
from nats.js import JetStreamContext

from dsi_shared.bus import Naming, read_all

STREAM = "DSI_DEAD_LETTERS"
REPLAYED = "dsi.dead-letter.replayed"


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


async def list_dead_letters(js: JetStreamContext, naming: Naming, service: str | None = None,
                            timeout: float = 2.0) -> list[DeadLetter]:
    """Every dead letter (of one service, or all), oldest first, with whether it was replayed."""
    letters: list[DeadLetter] = []
    replayed: set[int] = set()
    async for message in read_all(js, naming.subject("dsi.dead-letter.>"), timeout):
        subject = naming.contract_subject(message.subject)
        headers = message.headers or {}
        if subject == REPLAYED:
            replayed.add(int(headers.get("Dsi-Replay-Of", "0")))
            continue
        owner = subject.removeprefix("dsi.dead-letter.")
        if service is None or owner == service:
            letters.append(DeadLetter(
                message.metadata.sequence.stream, message.metadata.timestamp, owner,
                headers.get("Dsi-Original-Subject", "?"), headers.get("Dsi-Consumer", "?"),
                int(headers.get("Dsi-Deliveries", "0")), headers.get("Dsi-Reason", "?"), False, trace_id_of(headers)))
    return [DeadLetter(**{**vars(d), "replayed": d.sequence in replayed}) for d in letters]


async def replay_dead_letter(js: JetStreamContext, naming: Naming, sequence: int, operator: str) -> DeadLetter:
    """Republish one dead letter's original message; record that it was replayed, and by whom."""
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
    await js.publish(naming.subject(REPLAYED), b"", headers={"Dsi-Replay-Of": str(sequence), "Dsi-Operator": operator,
                                                             "Nats-Msg-Id": f"replayed:{sequence}"})
    service = naming.contract_subject(raw.subject or "").removeprefix("dsi.dead-letter.")
    return DeadLetter(sequence, datetime.now().astimezone(), service, original, headers.get("Dsi-Consumer", "?"),
                      int(headers.get("Dsi-Deliveries", "0")), headers.get("Dsi-Reason", "?"), True, trace_id_of(headers))
