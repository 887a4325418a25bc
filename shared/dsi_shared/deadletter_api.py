"""Each service's own dead letters over HTTP, for operators (the console's operations page): `GET /dead-letters`
lists them (reason, subject, consumer, trace id: never a body) and `POST /dead-letters/{sequence}/replay`
republishes one, as `dsi ops dead-letters replay` does, recorded with who asked. A service answers for its own
dead letters only: another service's sequence is 404 here, as an unknown one is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, get_type_hints

import nats.errors
from fastapi import APIRouter, Depends, Path
from nats.aio.client import Client
from pydantic import create_model

from dsi_shared.bus import Naming
from dsi_shared.deadletters import DeadLetter, NoSuchDeadLetter, list_dead_letters, replay_dead_letter
from dsi_shared.errors import NotFound, PermanentError
from dsi_shared.http import PROBLEM_RESPONSES, Answer, Auth, DependencyUnavailable

NATS_TIMEOUT = 10.0  # listing waits up to 2 s for a quiet stream; a stuck server answers 503, not a hung request


# A dead letter as `dsi ops dead-letters list --json` prints it: the dataclass's fields, `at` in ISO 8601.
FIELDS: dict[str, Any] = {name: (str if name == "at" else hint, ...) for name, hint in get_type_hints(DeadLetter).items()}
DeadLetterView = create_model("DeadLetterView", __base__=Answer, **FIELDS)


class DeadLetterList(Answer):
    service: str
    dead_letters: list[DeadLetterView]  # type: ignore[valid-type]


class AlreadyReplayed(PermanentError):
    """A dead letter replayed before (409): its replay is recorded; the consumer's tracking made it count once."""


def view(letter: DeadLetter) -> dict[str, Any]:
    return {**vars(letter), "at": letter.at.isoformat()}


def routes(service: str, auth: Auth, bus: Callable[[], tuple[Client | None, Naming]],
           least_privilege: bool = False) -> APIRouter:
    """`bus()` gives the runtime's NATS connection (None before start) and its naming, at request time.
    `least_privilege`: the service connects as its own NATS user (`dsi_shared.natsperms`), which may neither read
    the dead-letter stream (other services' messages) nor publish on the subjects it consumes (that would let it
    forge its inputs): the routes say so at once instead of waiting for the server's refusal to time out."""
    router = APIRouter(tags=["operations"], responses=PROBLEM_RESPONSES)

    async def own_letters() -> tuple[Any, Naming, list[DeadLetter]]:
        if least_privilege:
            raise DependencyUnavailable("nats", f"{service}'s own NATS user may not read or replay dead letters: use "
                                                "`dsi ops dead-letters` (NATS user ops)")
        nc, naming = bus()
        if nc is None or not nc.is_connected:
            raise DependencyUnavailable("nats", "NATS is unreachable: dead letters are kept on JetStream only")
        js = nc.jetstream()
        try:
            letters = await asyncio.wait_for(list_dead_letters(js, naming, service), NATS_TIMEOUT)
        except (TimeoutError, nats.errors.Error, OSError):
            raise DependencyUnavailable("nats", "the dead letters cannot be read now") from None
        return js, naming, letters

    @router.get("/dead-letters", dependencies=[Depends(auth.require("ops", "auditor"))], response_model=DeadLetterList)
    async def dead_letters() -> dict[str, Any]:
        """This service's dead letters, oldest first: when, which consumer and subject, how many deliveries, why,
        whether replayed, and the failed message's trace id (never its body: it may carry PHI)."""
        _, _, letters = await own_letters()
        return {"service": service, "dead_letters": [view(d) for d in letters]}

    @router.post("/dead-letters/{sequence}/replay", response_model=DeadLetterView)
    async def replay(sequence: int = Path(ge=1, le=2**63 - 1),
                     operator: str = Depends(auth.require_actor("ops"))) -> dict[str, Any]:
        """Republish one of this service's dead letters on its original subject, once its cause is fixed. Every
        consumer's tracking makes it a no-op where it was applied already; only the one that failed applies it."""
        js, naming, letters = await own_letters()
        letter = next((d for d in letters if d.sequence == sequence), None)
        if letter is None:
            raise NotFound(f"{service} has no dead letter at sequence {sequence}")
        if letter.replayed:
            raise AlreadyReplayed(f"dead letter {sequence} was replayed already")
        try:
            return view(await asyncio.wait_for(replay_dead_letter(js, naming, sequence, operator), NATS_TIMEOUT))
        except NoSuchDeadLetter as exc:  # gone between the listing and the replay (the stream's limits)
            raise NotFound(str(exc)) from None
        except (TimeoutError, nats.errors.Error, OSError):
            raise DependencyUnavailable("nats", "the dead letter cannot be replayed now") from None

    return router
