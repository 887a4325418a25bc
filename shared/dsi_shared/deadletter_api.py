"""Each service's own dead letters over HTTP, for operators (the console's operations page): `GET /dead-letters`
lists them (reason, subject, consumer, trace id: never a body) and `POST /dead-letters/{sequence}/replay`
applies one again through the consumer that failed, in process, recorded with who asked. A service answers for its own
dead letters only: another service's sequence is 404 here, as an unknown one is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, get_type_hints

import nats.errors
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import create_model

from dsi_shared.bus import Naming
from dsi_shared.consumer import TrackingConsumer
from dsi_shared.deadletters import DeadLetter, letters_of, list_dead_letters, read_letter, record_replayed, replayed_of
from dsi_shared.errors import NotFound, PermanentError, describe
from dsi_shared.http import PROBLEM_RESPONSES, Answer, Auth, DependencyUnavailable
from dsi_shared.occ import ConcurrentChange
from dsi_shared.projections_query import CURSOR, LIMIT, decode_cursor, encode_cursor, sort_query

NATS_TIMEOUT = 10.0  # listing waits up to 2 s for a quiet stream; a stuck server answers 503, not a hung request


# A dead letter as `dsi ops dead-letters list --json` prints it: the dataclass's fields, `at` in ISO 8601.
FIELDS: dict[str, Any] = {name: (str if name == "at" else hint, ...) for name, hint in get_type_hints(DeadLetter).items()}
DeadLetterView = create_model("DeadLetterView", __base__=Answer, **FIELDS)


class DeadLetterList(Answer):
    service: str
    count: int  # every dead letter matching the filters
    dead_letters: list[DeadLetterView]  # type: ignore[valid-type]
    next_cursor: str | None


def chosen(letters: list[DeadLetter], consumer: str | None, subject: str | None, replayed: bool | None, sort: str,
           limit: int, cursor: str | None) -> tuple[list[DeadLetter], int, str | None]:
    """One page of dead letters matching the filters, by time (their stream order; `-at` newest first), behind the
    read models' opaque cursor; and how many match in all."""
    matching = [d for d in letters if (consumer is None or d.consumer == consumer)
                and (subject is None or d.original_subject == subject) and (replayed is None or d.replayed == replayed)]
    descending = sort.startswith("-")
    matching.sort(key=lambda d: d.sequence, reverse=descending)
    rest = matching
    if cursor is not None:
        last, _ = decode_cursor(cursor, sort)
        if not isinstance(last, int):
            raise HTTPException(422, "cursor is not one this endpoint gave")
        rest = [d for d in matching if (d.sequence < last if descending else d.sequence > last)]
    page = rest[:limit]
    more = len(rest) > limit
    return page, len(matching), encode_cursor(sort, page[-1].sequence, str(page[-1].sequence)) if more else None


class AlreadyReplayed(PermanentError):
    """A dead letter replayed before (409): its replay is recorded; the consumer's tracking made it count once."""


def view(letter: DeadLetter) -> dict[str, Any]:
    return {**vars(letter), "at": letter.at.isoformat()}


class StillFailing(PermanentError):
    """Replayed here, the dead letter fails again (409 with the reason): fix the cause, then replay it again."""


def routes(service: str, auth: Auth, bus: Callable[[], tuple[Client | None, Naming]],
           consumers: Callable[[], Sequence[TrackingConsumer]]) -> APIRouter:
    """`bus()` gives the runtime's NATS connection (None before start) and its naming, at request time; `consumers()`
    its consumers. The service reads only its own dead letters and replays them in process, through the consumer
    that failed: its own NATS user (`dsi_shared.natsperms`) may read nothing else of the dead-letter stream, and may
    not publish on the subjects it consumes (that would let it forge its inputs)."""
    router = APIRouter(tags=["operations"], responses=PROBLEM_RESPONSES)

    def connected() -> tuple[JetStreamContext, Naming]:
        nc, naming = bus()
        if nc is None or not nc.is_connected:
            raise DependencyUnavailable("nats", "NATS is unreachable: dead letters are kept on JetStream only")
        return nc.jetstream(), naming

    @router.get("/dead-letters", dependencies=[Depends(auth.require("ops", "auditor"))], response_model=DeadLetterList)
    async def dead_letters(limit: int = LIMIT, cursor: str | None = CURSOR, sort: str = sort_query(("at",), "at"),
                           consumer: str | None = Query(None, max_length=200, description="only this consumer's"),
                           subject: str | None = Query(None, max_length=200, description="only this original subject"),
                           replayed: bool | None = Query(None, description="only replayed (true) or not (false)"),
                           ) -> dict[str, Any]:
        """This service's dead letters, oldest first (`sort=-at`: newest first), a page at a time: when, which
        consumer and subject, how many deliveries, why, whether replayed, and the failed message's trace id (never
        its body: it may carry PHI). Read from the dead-letter stream itself, the one place they are kept."""
        js, naming = connected()
        try:
            letters = await asyncio.wait_for(list_dead_letters(js, naming, service), NATS_TIMEOUT)
        except (TimeoutError, nats.errors.Error, OSError):
            raise DependencyUnavailable("nats", "the dead letters cannot be read now") from None
        page, count, next_cursor = chosen(letters, consumer, subject, replayed, sort, limit, cursor)
        return {"service": service, "count": count, "dead_letters": [view(d) for d in page], "next_cursor": next_cursor}

    @router.post("/dead-letters/{sequence}/replay", response_model=DeadLetterView)
    async def replay(sequence: int = Path(ge=1, le=2**63 - 1),
                     operator: str = Depends(auth.require_actor("ops"))) -> dict[str, Any]:
        """Apply one of this service's dead letters again, here, through the consumer that failed, once its cause is
        fixed: its tracking position makes it count once (a replay of one applied already changes nothing). 409 with
        the reason when it fails again; the dead letter then stays unreplayed."""
        js, naming = connected()

        async def find() -> tuple[Any, bool]:
            replayed = await replayed_of(js, naming, service)
            async for message in letters_of(js, naming, service):
                if message.metadata.sequence.stream == sequence:
                    return message, sequence in replayed
            return None, False

        try:
            message, replayed = await asyncio.wait_for(find(), NATS_TIMEOUT)
        except (TimeoutError, nats.errors.Error, OSError):
            raise DependencyUnavailable("nats", "the dead letters cannot be read now") from None
        if message is None:
            raise NotFound(f"{service} has no dead letter at sequence {sequence}")
        if replayed:
            raise AlreadyReplayed(f"dead letter {sequence} was replayed already")
        consumer = next((c for c in consumers() if c.takes_back(message)), None)
        if consumer is None:
            raise StillFailing(f"dead letter {sequence} names no consumer this service runs now")
        try:
            await consumer.apply_dead_letter(message)
        except ConcurrentChange:
            raise
        except (PermanentError, ValueError) as exc:
            raise StillFailing(f"dead letter {sequence} fails again: {describe(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - the store away, or a handler's bug: say so, never a 500
            raise DependencyUnavailable("store", f"dead letter {sequence} could not be applied now: "
                                                 f"{describe(exc)}") from None
        try:
            await asyncio.wait_for(record_replayed(js, naming, service, sequence, operator), NATS_TIMEOUT)
        except (TimeoutError, nats.errors.Error, OSError):  # applied; the record is missing: a later replay is a no-op
            raise DependencyUnavailable("nats", f"dead letter {sequence} was applied; its replay could not be "
                                                "recorded now (replaying it again changes nothing)") from None
        return view(replace(read_letter(message, service), replayed=True))

    return router
