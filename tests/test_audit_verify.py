"""A running service seals its log and publishes checkpoints to JetStream; `dsi audit verify` and
`GET /audit/verify` (auditor, ops) recompute the chain and name a tampered position."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dsi_shared.sealer import read_checkpoints

from tests.harness import STAFF, Stack, eventually
from tests.test_tamper_evidence import Rows

pytestmark = pytest.mark.integration
AUDITOR = {"Authorization": "Bearer auditor-token"}


def verify(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSI_VAR_DIR": str(tmp_path / "var"), "NATS_URL": stack.nats_url, "DSI_BUS_PREFIX": stack.prefix,
           "ENROLLMENT_STORE": stack.store_url_for("enrollment"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "dsi_shared.cli", "audit", "verify", "--service", "enrollment", *args],
                          env=env, capture_output=True, text=True, timeout=120)


async def test_checkpoints_are_published_and_verify_names_a_tampered_event(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_CHECKPOINT_SECONDS", "0.2")
    await stack.start("enrollment")
    await stack.register()
    await stack.register()
    app = stack.runtimes["enrollment"].app
    head = app.recorder.max_notification_id()
    js = (await stack.nc()).jetstream()

    async def checkpointed() -> bool:
        found = await read_checkpoints(js, stack.naming, "enrollment", timeout=0.5)
        return bool(found) and found[-1].position == head
    await eventually(checkpointed)

    client = stack.clients["enrollment"]
    assert (await client.get("/audit/verify", headers=STAFF)).status_code == 403
    answer = (await client.get("/audit/verify", headers=AUDITOR)).json()
    assert answer["intact"] is True and answer["sealed_head"] == head and answer["checkpoints"] >= 1
    result = await asyncio.to_thread(verify, stack, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["services"][0]["events"] == head

    rows = Rows(app)
    [state] = rows.sql("SELECT state FROM {t} WHERE {id} = ?", (2,))
    data = bytes(state["state"] if isinstance(state, dict) else state[0])
    rows.sql("UPDATE {t} SET state = ? WHERE {id} = ?", (data.replace(b'"', b"'", 1) + b" ", 2))
    tampered = await asyncio.to_thread(verify, stack, tmp_path)
    assert tampered.returncode == 1 and "position 2: the event was altered after it was sealed" in tampered.stdout
    assert (await client.get("/audit/verify", headers=AUDITOR)).json()["problems"] == [
        "position 2: the event was altered after it was sealed"]
