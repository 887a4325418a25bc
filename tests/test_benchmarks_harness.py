"""The benchmark harness (issue 14 §4) measures on production settings and reports what it measured honestly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from benchmarks import setting


@pytest.fixture
def figures() -> Iterator[list[setting.Figure]]:
    saved = list(setting.FIGURES)
    setting.FIGURES.clear()
    yield setting.FIGURES
    setting.FIGURES[:] = saved


def test_a_child_process_reports_its_own_peak_memory_not_its_parents() -> None:
    ballast = b"x" * (400 * 1024 * 1024)  # written, so resident in this process before the child starts
    assert setting.vm_hwm_mb() >= 400
    child = subprocess.run([sys.executable, "-c", "from benchmarks.setting import vm_hwm_mb; print(vm_hwm_mb())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < 200, "the child's VmHWM must not include the parent's 400 MB"
    del ballast


@pytest.mark.integration
def test_the_benchmark_runs_its_own_nats_that_syncs_every_write() -> None:
    with setting.bench_nats() as bus:
        assert bus.sync_always
        assert not bus.url.endswith(":4222"), "never the machine's shared server"
        assert "sync_interval: always" in bus.describe()


@pytest.mark.integration
def test_the_store_line_says_whether_postgresql_is_durable(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_BENCH_POSTGRES", postgres_server)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        fsync = str(conn.execute("SHOW fsync").fetchone()[0])  # type: ignore[index]
        commit = str(conn.execute("SHOW synchronous_commit").fetchone()[0])  # type: ignore[index]
    line = setting.postgres_durability()
    assert f"fsync={fsync}" in line and f"synchronous_commit={commit}" in line
    assert ("NOT DURABLE" in line) == (fsync != "on" or commit != "on")


def test_sizes_follow_the_chosen_size_and_a_figures_own_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSI_BENCH_X", raising=False)
    monkeypatch.setenv("DSI_BENCH_SIZE", "quick")
    assert setting.size("DSI_BENCH_X", quick=1, default=2, full=3) == 1
    monkeypatch.setenv("DSI_BENCH_SIZE", "full")
    assert setting.size("DSI_BENCH_X", quick=1, default=2, full=3) == 3
    assert setting.size("DSI_BENCH_X", quick=1, default=2) == 2  # no larger full size: the default
    monkeypatch.setenv("DSI_BENCH_X", "7")
    assert setting.size("DSI_BENCH_X", quick=1, default=2, full=3) == 7


def test_the_summary_has_one_row_per_figure_with_its_ratio_and_goal(figures: list[setting.Figure]) -> None:
    setting.report("relay → consumer exactly-once", "194 events/s", "0.16 × raw store append", "≥ 3,000 events/s")
    setting.report("834 import", "1,000 members/s", "0.29 × parse")
    table = setting.summary({"spine": 61.2}, ["store: PostgreSQL, fsync=on"]).splitlines()
    rows = [line for line in table if line.startswith(("relay", "834"))]
    assert rows[0].split("  ")[0] == "relay → consumer exactly-once"
    assert "0.16 × raw store append" in rows[0] and "≥ 3,000 events/s" in rows[0]
    assert "0.29 × parse" in rows[1]
    assert "store: PostgreSQL, fsync=on" in table and "durations: spine 61 s" in table
