"""The short seeded fault soak in CI (issue 16 §1): a few runs, each a generated workload through the five services as
processes on their own NATS and PostgreSQL, under the seed's faults, compared with its clean twin and audited.
`make soak RUNS=1000` is the long one."""

from __future__ import annotations

import pytest

from soak.run import one_run

pytestmark = pytest.mark.integration
SEEDS = (1, 2)


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_faulted_run_loses_doubles_and_changes_nothing_against_its_clean_twin(
        seed: int, postgres_server: str) -> None:
    outcome = await one_run(seed, postgres_server)
    assert sum(outcome.counts.values()) > 0, "no fault was injected"
    assert outcome.ok, (f"seed {seed} (make soak SEED={seed} RUNS=1): lost {outcome.lost}, doubled {outcome.doubled}, "
                        f"differing {outcome.differing[:10]}, audit {outcome.audit}; faults: "
                        + "; ".join(map(str, outcome.faults)))
