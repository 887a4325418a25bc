"""The sealer outlives a store that is away for a moment (found by the fault soak, `make soak`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dsi_shared import sealer as sealer_module
from dsi_shared.bus import Naming
from dsi_shared.sealer import Sealer
from eventsourcing.persistence import OperationalError


async def test_a_cut_store_connection_makes_the_sealer_wait_not_end(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    class CutOnce:
        """A hash chain whose first seal meets `pg_terminate_backend`."""

        def __init__(self, app: Any) -> None:
            pass

        def seal_all(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise OperationalError("terminating connection due to administrator command")
            sealer.stopping.set()

    monkeypatch.setattr(sealer_module, "HashChain", CutOnce)
    monkeypatch.setattr(sealer_module, "STORE_RETRY_SECONDS", 0.0)
    sealer = Sealer(None, "enrollment", None, Naming(""), 0.01)  # type: ignore[arg-type]
    await asyncio.wait_for(sealer.run(), 5)  # before: the OperationalError ended the worker (and `dsi serve` exits 70)
    assert len(attempts) == 2
