"""`dsi audit replay` checks the console's read model too (issue 15 §1: "`dsi audit replay` checks that a rebuilt
projection equals the live one"): the console has no audit of its own, but where its store is kept its tables are
rebuilt from that store in a scratch database and compared with the live ones, naming the first differing row by id."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from console.readmodel import PARTICIPANTS, Filters, participants
from console.readmodel import read as read_model

from tests.harness import Stack, eventually, quiet

pytestmark = pytest.mark.integration
SERVICES = ("enrollment", "submissions", "milestones", "payments", "qip-share")


def replay(stack: Stack, tmp_path: Path, *stores: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSI_VAR_DIR": str(tmp_path / "var"),
           **{f"{name.upper().replace('-', '_')}_STORE": stack.store_url_for(name) for name in stores}}
    return subprocess.run([sys.executable, "-m", "dsi_shared.cli", "audit", "replay", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)


async def test_audit_replay_compares_the_consoles_read_model_with_its_rebuild_where_its_store_is_kept(
        stack: Stack, tmp_path: Path) -> None:
    await stack.start("enrollment", "console")
    pid = await stack.register()
    app = stack.runtimes["console"].app

    async def shown() -> bool:
        rows = await asyncio.to_thread(read_model, app, participants, Filters())
        return any(row["id"] == pid for row in rows)

    await eventually(shown, timeout=30)
    await quiet(stack)
    agrees = replay(stack, tmp_path, *SERVICES, "console")
    assert agrees.returncode == 0 and json.loads(agrees.stdout)["problems"] == [], agrees.stdout + agrees.stderr

    engine = stack.runtimes["console"].read_models[0].engine
    with engine.begin() as conn:  # a row changed behind the projection's back
        conn.execute(sa.update(PARTICIPANTS).where(PARTICIPANTS.c.id == pid).values(legal_name="Someone Else"))
    differs = replay(stack, tmp_path, *SERVICES, "console")
    problems = json.loads(differs.stdout)["problems"]
    assert differs.returncode == 1 and any(p.startswith("console: read model console-overview") for p in problems), \
        differs.stdout
    assert "Someone Else" not in differs.stdout  # named by id, never by content
    without = replay(stack, tmp_path, *SERVICES)  # no console store kept here (no CONSOLE_STORE, no var/console.db)
    assert without.returncode == 0 and not (tmp_path / "var" / "console.db").exists()
