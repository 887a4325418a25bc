"""The MLLP group commit (issue 14 §3): files arriving on concurrent connections are recorded in small groups, one
transaction each, so that one commit (one fsync) serves many files.

Commit when idle, batch while busy: a file that arrives while no commit runs is judged and committed at once (a lone
sender waits for nothing more than before); files that arrive during a commit wait for it and are committed together
next, judged in arrival order as if sent one by one (`Submissions.receive_hl7_group`). Each file's answer is released
only after the commit that holds its verdict: no ACK before commit, as before.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from submissions.application import Evaluation, HL7Receipt, Submissions

MAX_GROUP = 64  # files per transaction: bounds a group's commit time, and so the wait of the files behind it


class NotRecorded(Exception):
    """The commit holding this file was interrupted (the listener stopping): whether it was recorded is unknown, so
    the sender is asked to send it again (a copy is recorded as a duplicate, never credited twice)."""


class GroupCommitter:
    def __init__(self, app: Submissions, max_group: int = MAX_GROUP) -> None:
        self.app, self.max_group = app, max_group
        self.waiting: list[tuple[HL7Receipt, asyncio.Future[Evaluation]]] = []
        self.worker: asyncio.Task[None] | None = None
        self.sizes: Counter[int] = Counter()  # groups committed, by number of files (for benchmarks, operators)

    async def receive(self, receipt: HL7Receipt) -> Evaluation:
        """The file's evaluation once committed; raises what kept it from being recorded."""
        future: asyncio.Future[Evaluation] = asyncio.get_running_loop().create_future()
        self.waiting.append((receipt, future))
        if self.worker is None or self.worker.done():  # idle: commit now
            self.worker = asyncio.create_task(self._commit_while_waiting())
        return await future

    async def _commit_while_waiting(self) -> None:
        group: list[tuple[HL7Receipt, asyncio.Future[Evaluation]]] = []
        try:
            while self.waiting:
                group, self.waiting = self.waiting[:self.max_group], self.waiting[self.max_group:]
                self.sizes[len(group)] += 1
                results = await asyncio.to_thread(self.app.receive_hl7_group, [receipt for receipt, _ in group])
                for (_, future), result in zip(group, results, strict=True):
                    if future.done():  # its connection went away meanwhile
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                group = []
        finally:  # cancelled mid-commit: every file still waiting is answered, never left hanging
            for _, future in [*group, *self.waiting]:
                if not future.done():
                    future.set_exception(NotRecorded())
            self.waiting = []
