"""One seeded run: the workload on a clean system and on a faulted one; the two snapshots compared, and the audit's
verify and replay on the faulted stores."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from soak.client import Api
from soak.cluster import Cluster
from soak.faults import Fault, Injector, schedule
from soak.settle import settled
from soak.snapshot import differences, take
from soak.workload import Driver, generate


@dataclass
class Outcome:
    seed: int
    faults: list[Fault] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)
    exits: dict[str, int] = field(default_factory=dict)  # services that exited by themselves under the faults
    holds: int = 0  # times the faults were held for a step that waited over a minute to settle (Cluster.faults_held)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.differing or self.audit)


async def drive(seed: int, cluster: Cluster, injector: Injector | None) -> tuple[dict[str, Any], list[str]]:
    """The seed's workload on `cluster` (under `injector`'s faults, if any): its snapshot and the audit's problems."""
    api = Api(cluster)
    supervisor: asyncio.Task[None] | None = None
    try:  # a start that fails half-way is stopped too: no process, server or database is left behind
        await asyncio.to_thread(cluster.start)
        supervisor = asyncio.create_task(supervise(cluster))
        driver = Driver(generate(seed), cluster, api)
        if injector:
            injector.start()
        try:
            await driver.run()
        finally:
            if injector:
                await injector.stop()
        await settled(cluster)
        snapshot = await take(driver)
        audit = await asyncio.to_thread(audit_problems, cluster) if injector is not None else []
        return snapshot, audit
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await api.close()
        await asyncio.to_thread(cluster.stop)


async def supervise(cluster: Cluster) -> None:
    while True:
        await asyncio.to_thread(cluster.supervise)
        await asyncio.sleep(0.5)  # a supervisor's polling interval


def audit_problems(cluster: Cluster) -> list[str]:
    """`dsi audit verify` and `dsi audit replay` on the run's stores: what they name, if they fail."""
    problems = []
    for command in (["verify"], ["replay"]):
        done = subprocess.run([sys.executable, "-m", "dsi_shared.cli", "audit", *command, "--json"], env=cluster.env(),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            problems.append(f"dsi audit {command[0]} exited {done.returncode}: {(done.stdout + done.stderr)[-600:]}")
    return problems


def paid(snapshot: dict[str, Any]) -> dict[str, Decimal]:
    return {npi: Decimal(p["payments"]["total_paid"]) for npi, p in snapshot["participants"].items()}


def payment_count(snapshot: dict[str, Any]) -> dict[str, int]:
    return {npi: len(p["payments"]["payments"]) for npi, p in snapshot["participants"].items()}


async def one_run(seed: int, postgres: str, keep: bool = False) -> Outcome:
    began = time.monotonic()
    key = base64.b64encode(os.urandom(32)).decode()
    root = Path(tempfile.mkdtemp(prefix=f"dsi-soak-{seed}-"))
    outcome = Outcome(seed, schedule(seed))
    try:
        cluster = Cluster(root / "faulted", postgres, key)
        injector = Injector(cluster, outcome.faults)
        # the twins run side by side, each on a system of its own: the run takes as long as the faulted one
        both: list[Any] = list(await asyncio.gather(drive(seed, Cluster(root / "clean", postgres, key), None),
                                                    drive(seed, cluster, injector), return_exceptions=True))
        twin, ran = both
        if isinstance(twin, BaseException):
            raise twin  # the clean run must finish: the soak itself is broken
        clean: dict[str, Any] = twin[0]
        if isinstance(ran, BaseException):  # a run that cannot finish is a failed run, with its schedule
            where = traceback.extract_tb(ran.__traceback__)[-1]
            outcome.differing.append(f"the faulted run did not finish: {type(ran).__name__}: {ran} "
                                     f"(at {Path(where.filename).name}:{where.lineno})")
            faulted: dict[str, Any] = {}
        else:
            faulted, outcome.audit = ran
        outcome.faults, outcome.counts, outcome.exits = injector.applied, dict(injector.counts), dict(cluster.exits)
        outcome.holds = cluster.holds
        if not faulted:
            return outcome
        for npi, amount in paid(clean).items():
            got, count, want = paid(faulted).get(npi, Decimal(0)), payment_count(faulted).get(npi, 0), \
                payment_count(clean)[npi]
            if got < amount or count < want:
                outcome.lost.append(f"participant {npi}: paid {got} in {count} payment(s), clean {amount} in {want}")
            elif got > amount or count > want:
                outcome.doubled.append(f"participant {npi}: paid {got} in {count} payment(s), clean {amount} in {want}")
        outcome.differing = differences(clean, faulted)
        if not outcome.ok:
            (root / "clean.json").write_text(json.dumps(clean, indent=1))
            (root / "faulted.json").write_text(json.dumps(faulted, indent=1))
    finally:
        outcome.seconds = time.monotonic() - began
        keep = keep or not outcome.ok
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not outcome.ok:
            outcome.audit.append(f"(logs and snapshots kept in {root})")
    return outcome
