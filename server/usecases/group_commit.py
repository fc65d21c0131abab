"""Group commit: items from concurrent calls are written together, one transaction per batch."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from server.domain.errors import StorageUnavailable

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

BatchWriter = Callable[[Sequence[ItemT]], list[ResultT | Exception]]


@dataclass(frozen=True, slots=True)
class GroupCommitSettings:
    """How many items a batch takes at most, and how many batches are written at the same time."""

    max_batch_size: int = 256
    writers: int = 2


class GroupCommit(Generic[ItemT, ResultT]):
    """Collects items that concurrent calls submit and writes them in batches on writer threads.

    A writer that is free takes every waiting item (up to `max_batch_size`) at once, so items
    wait only while an earlier batch commits, and an idle service writes a single item at
    once. Each caller's future resolves after its batch commits, so an acknowledged item is
    durable. Every method runs on the event loop's thread.
    """

    def __init__(self, name: str, write_batch: BatchWriter[ItemT, ResultT], settings: GroupCommitSettings) -> None:
        if settings.max_batch_size < 1 or settings.writers < 1:
            raise ValueError(f"batch size and writers must be at least 1, got {settings}")
        self._name = name
        self._write_batch = write_batch
        self._settings = settings
        self._waiting: deque[tuple[ItemT, asyncio.Future[ResultT]]] = deque()
        self._executor = ThreadPoolExecutor(max_workers=settings.writers, thread_name_prefix=f"{name}-writer")
        self._writer_tasks: set[asyncio.Task[None]] = set()
        # Counted here, not by the task set: a task leaves the set only in a later loop step.
        self._active_writers = 0
        self._closed = False

    async def submit(self, item: ItemT) -> ResultT:
        """Write the item in the next batch and return its result; raise the item's error.

        Cancelling the call before its batch starts withdraws the item. Once its batch has
        started, the item is written even if the caller is gone.
        """
        if self._closed:
            # Only a call that arrives during shutdown gets here, and UNAVAILABLE makes it retryable.
            raise StorageUnavailable()
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._active_writers < self._settings.writers:
            self._active_writers += 1
            task = asyncio.ensure_future(self._write_waiting_items())
            self._writer_tasks.add(task)
            task.add_done_callback(self._writer_tasks.discard)
        return await future

    async def close(self) -> None:
        """Reject new items, then wait until the items already submitted are written and committed."""
        self._closed = True
        while self._writer_tasks:
            await asyncio.gather(*self._writer_tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _write_waiting_items(self) -> None:
        try:
            while self._waiting:
                batch = self._take_batch()
                if batch:
                    await self._write(batch)
        finally:
            self._active_writers -= 1

    async def _write(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        items = [item for item, _ in batch]
        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(self._executor, self._write_batch, items)
        except Exception as error:
            # The whole batch failed and nothing of it is stored, typically StorageUnavailable.
            logger.warning(
                "batch write failed",
                extra={"queue": self._name, "items": len(items), "error": type(error).__name__},
            )
            outcomes = [error] * len(items)
        if len(outcomes) != len(items):
            logger.error(
                "batch writer returned the wrong number of outcomes",
                extra={"queue": self._name, "items": len(items), "outcomes": len(outcomes)},
            )
            outcomes = [RuntimeError("batch writer returned the wrong number of outcomes")] * len(items)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _take_batch(self) -> list[tuple[ItemT, asyncio.Future[ResultT]]]:
        """Take up to `max_batch_size` waiting items whose callers still wait."""
        batch: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        while self._waiting and len(batch) < self._settings.max_batch_size:
            item, future = self._waiting.popleft()
            if not future.cancelled():
                batch.append((item, future))
        return batch
