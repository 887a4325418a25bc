"""The MLLP group commit (issue 14 §3): files arriving on concurrent connections are recorded in small groups, one
transaction each, so that one commit (one fsync) serves many files.

Commit when idle, batch while busy: a file that arrives while no commit runs is judged and committed at once (a lone
sender waits for nothing more than before); files that arrive meanwhile are judged together next, in arrival order as
if sent one by one (`Submissions.judge_hl7_group`), while the commit before them runs, and committed after it. Each
file's answer is released only after the commit that holds its verdict: no ACK before commit, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from submissions.application import Evaluation, HL7Receipt, JudgedGroup, Submissions

log = logging.getLogger(__name__)

MAX_GROUP = 64  # files per transaction: bounds a group's commit time, and so the wait of the files behind it


class NotRecorded(Exception):
    """The commit holding this file was interrupted (the listener stopping): whether it was recorded is unknown, so
    the sender is asked to send it again (a copy is recorded as a duplicate, never credited twice)."""


Entry = tuple[HL7Receipt, "asyncio.Future[Evaluation]"]


@dataclass
class Committing:
    """A judged group whose commit is running."""

    entries: list[Entry]
    judged: JudgedGroup
    task: asyncio.Future[None]


class GroupCommitter:
    """While one group commits (waiting on the database), the next is judged from the state the first left, so
    judging and committing overlap; the next group commits only after the first did, and is received file by file
    if the first failed."""

    def __init__(self, app: Submissions, max_group: int = MAX_GROUP) -> None:
        self.app, self.max_group = app, max_group
        self.waiting: list[Entry] = []
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
        committing: Committing | None = None
        entries: list[Entry] = []
        try:
            while self.waiting or committing is not None:
                entries, self.waiting = self.waiting[:self.max_group], self.waiting[self.max_group:]
                judged: JudgedGroup | None = None
                if entries:
                    self.sizes[len(entries)] += 1
                    after = committing.judged if committing is not None else None
                    try:  # while the previous group commits
                        judged = await asyncio.to_thread(self.app.judge_hl7_group, [r for r, _ in entries], after)
                    except Exception as exc:  # noqa: BLE001 - received file by file below
                        log.warning("group of %d files not judged together (%s)", len(entries), type(exc).__name__)
                if committing is not None:
                    if not await self._settle(committing):
                        judged = None  # judged on changes that were not recorded
                    committing = None
                if judged is not None:
                    task = asyncio.ensure_future(asyncio.to_thread(self.app.commit_hl7_group, judged))
                    committing, entries = Committing(entries, judged, task), []
                elif entries:
                    _resolve(entries, await asyncio.to_thread(self.app.receive_each, [r for r, _ in entries]))
                    entries = []
        finally:  # cancelled (the listener stopping): every file still waiting is answered, never left hanging
            unresolved = [*entries, *(committing.entries if committing else []), *self.waiting]
            for _, future in unresolved:
                if not future.done():
                    future.set_exception(NotRecorded())
            self.waiting = []

    async def _settle(self, committing: Committing) -> bool:
        """Wait for the commit; answer its files. False when it failed (then each file was received alone)."""
        try:
            await committing.task
        except Exception as exc:  # noqa: BLE001 - nothing recorded: each file alone decides its own outcome
            log.warning("group of %d files not committed together (%s): received one by one",
                        len(committing.entries), type(exc).__name__)  # the type only: messages may hold PHI
            _resolve(committing.entries, await asyncio.to_thread(
                self.app.receive_each, [r for r, _ in committing.entries]))
            return False
        _resolve(committing.entries, list(committing.judged.evaluations))
        return True


def _resolve(entries: list[Entry], results: list[Evaluation] | list[Evaluation | Exception]) -> None:
    for (_, future), result in zip(entries, results, strict=True):
        if future.done():  # its connection went away meanwhile
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
