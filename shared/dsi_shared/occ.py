"""Optimistic concurrency, handled once for every command.

Every command loads aggregates, decides and saves; the store refuses the save (`IntegrityError`) when another
writer changed one of the same aggregates (or recorded the same tracking position) in between. The command is
then decided again from what is stored now — never re-saving stale aggregates — after a short random pause so
that writers racing on one aggregate spread out. Only when the aggregate keeps changing under the command for
every attempt is the conflict reported (`ConcurrentChange`: HTTP 409 with `Retry-After`, a NATS redelivery).

A conflict the domain itself recognises after reloading (a duplicate NPI, a decision already taken) is raised by
the command as its own error on the next attempt, so callers see the real reason, not a version number.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from eventsourcing.persistence import IntegrityError

T = TypeVar("T")
log = logging.getLogger(__name__)

OCC_ATTEMPTS = 30  # about 3 s of jittered back-off in all before a 409
_FIRST_PAUSE, _MAX_PAUSE = 0.002, 0.1  # seconds; doubled per attempt, jittered, capped


class ConcurrentChange(Exception):
    """The same aggregate kept changing under a command for every attempt: try again later (HTTP 409).

    Not a `PermanentError`: a consumed message that meets it is redelivered, not dead-lettered."""


def retry_on_conflict(attempt: Callable[[], T], what: str = "the record", attempts: int | None = None) -> T:
    """Run `attempt` (load, decide, save) until it saves without an optimistic-concurrency conflict.

    `attempt` must reload everything it decides from on each call. `what` names the thing being changed, for
    the error and the log (never an identifier or a value: no PHI)."""
    limit = attempts or OCC_ATTEMPTS
    for number in range(1, limit + 1):
        try:
            return attempt()
        except IntegrityError:
            if number == limit:
                break
            pause = min(_FIRST_PAUSE * 2 ** min(number - 1, 16), _MAX_PAUSE)
            time.sleep(pause * (0.5 + random.random()))
    log.warning("%s changed concurrently %d times in a row; giving up", what, limit)
    raise ConcurrentChange(f"{what} changed concurrently {limit} times in a row; try again")
