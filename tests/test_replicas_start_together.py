"""Replicas of a service started together on a fresh PostgreSQL store all start (found by the benchmark harness:
the loser of a `CREATE TABLE IF NOT EXISTS` race died with a unique violation), and a stopped runtime gives back
every database connection it opened (a leak exhausted PostgreSQL's connection slots during a full test run)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest
from dsi_shared.chain import HashChain
from dsi_shared.service import ServiceRuntime, discover

from tests.harness import Stack, eventually

pytestmark = pytest.mark.integration


def test_replicas_creating_their_tables_at_once_on_a_fresh_store_all_start(stack: Stack) -> None:
    spec = discover()["submissions"]  # store, hash chain, blobs and a read model: every table the project creates
    url = stack.settings("submissions").store
    if not url.startswith("postgresql"):
        pytest.skip("the race is PostgreSQL's")  # the stack fixture gives PostgreSQL on this project's CI
    barrier, failures, apps = threading.Barrier(6), [], []

    def start() -> None:
        try:
            barrier.wait()
            app = spec.application(url)
            HashChain(app)
            apps.append(app)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(repr(exc))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for app in apps:
        app.close()
    assert failures == [] and len(apps) == 6


async def test_a_stopped_runtime_gives_back_its_database_connections(stack: Stack) -> None:
    settings = stack.settings("enrollment")
    if not settings.store.startswith("postgresql"):
        pytest.skip("counted on PostgreSQL")
    database = settings.store.rsplit("/", 1)[1].split("?")[0]

    def connections() -> Any:
        with psycopg.connect(settings.store.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()
            return row[0] if row else 0

    runtime = ServiceRuntime(discover()["enrollment"], settings)
    await runtime.start()  # its store, hash chain and read models connect
    assert connections() > 0
    await runtime.stop()

    async def all_closed() -> bool:  # a backend leaves pg_stat_activity a moment after its client closed it
        return bool(await asyncio.to_thread(connections) == 0)

    assert await eventually(all_closed, timeout=15)
