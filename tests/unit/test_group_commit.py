"""GroupCommit with a hand-written batch writer: batch sizes, per-caller results, failures, cancellation and close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import pytest

from server.domain.errors import StorageUnavailable
from server.usecases.group_commit import GroupCommit, GroupCommitSettings

# Upper bound of every wait in these tests. Reaching it means that the code under test hangs.
WAIT_SECONDS = 5.0


class RecordingWriter:
    """A batch writer that records each batch and returns "stored:<item>" for every item.

    The first `held_batches` batches wait inside the writer until `release()`, so a test can
    queue more items while a batch is running. `item_errors` replaces an item's result with
    an error, and batches numbered in `failing_batches` (0 is the first) raise
    StorageUnavailable as a whole.
    """

    def __init__(
        self,
        *,
        held_batches: int = 0,
        item_errors: Mapping[str, Exception] | None = None,
        failing_batches: Collection[int] = (),
    ) -> None:
        self.batches: list[list[str]] = []
        self.max_overlap = 0
        self.batch_error = StorageUnavailable()
        self._held_batches = held_batches
        self._item_errors = dict(item_errors or {})
        self._failing_batches = set(failing_batches)
        self._released = threading.Event()
        self._started = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._running = 0

    def __call__(self, items: Sequence[str]) -> list[str | Exception]:
        with self._lock:
            number = len(self.batches)
            self.batches.append(list(items))
            self._running += 1
            self.max_overlap = max(self.max_overlap, self._running)
        self._started.release()
        try:
            if number < self._held_batches and not self._released.wait(WAIT_SECONDS):
                raise TimeoutError(f"batch {number} was not released within {WAIT_SECONDS} s")
            if number in self._failing_batches:
                raise self.batch_error
            return [self._item_errors.get(item, f"stored:{item}") for item in items]
        finally:
            with self._lock:
                self._running -= 1

    def release(self) -> None:
        self._released.set()

    async def wait_for_batches(self, count: int) -> None:
        """Wait until `count` more batches have started, or fail after WAIT_SECONDS."""
        for _ in range(count):
            started = await asyncio.to_thread(self._started.acquire, timeout=WAIT_SECONDS)
            assert started, f"the writer got {len(self.batches)} batches, expected more within {WAIT_SECONDS} s"


def run_with_group_commit(
    writer: RecordingWriter,
    settings: GroupCommitSettings,
    scenario: Callable[[GroupCommit[str, str]], Awaitable[None]],
) -> None:
    """Run `scenario` on a new event loop with a GroupCommit over `writer`, and close it afterwards."""

    async def main() -> None:
        group_commit: GroupCommit[str, str] = GroupCommit("test", writer, settings)
        try:
            await asyncio.wait_for(scenario(group_commit), WAIT_SECONDS * 2)
        finally:
            writer.release()
            await group_commit.close()

    asyncio.run(main())


async def queue_behind_held_batch(
    group_commit: GroupCommit[str, str], writer: RecordingWriter, items: Sequence[str]
) -> tuple[asyncio.Task[str], list[asyncio.Task[str]]]:
    """Start a batch of the item "held", which the writer holds, then submit `items` behind it.

    Returns the task of "held" and the tasks of `items`, which are all waiting when this returns.
    """
    held_task = asyncio.ensure_future(group_commit.submit("held"))
    await writer.wait_for_batches(1)
    queued_tasks = [asyncio.ensure_future(group_commit.submit(item)) for item in items]
    # One loop step lets every new task run up to its wait for the batch.
    await asyncio.sleep(0)
    return held_task, queued_tasks


@pytest.mark.parametrize(("max_batch_size", "writers"), [(0, 1), (1, 0)])
def test_settings_below_one_rejected(max_batch_size: int, writers: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit("test", RecordingWriter(), GroupCommitSettings(max_batch_size=max_batch_size, writers=writers))


def test_waiting_items_split_into_full_batches() -> None:
    writer = RecordingWriter(held_batches=1)
    items = [f"item-{index}" for index in range(10)]

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, queued_tasks = await queue_behind_held_batch(group_commit, writer, items)
        writer.release()
        results = await asyncio.gather(held_task, *queued_tasks)

        assert results == ["stored:held", *(f"stored:{item}" for item in items)]

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=4, writers=1), scenario)

    assert writer.batches == [["held"], items[0:4], items[4:8], items[8:10]]


def test_concurrent_submits_respect_max_size() -> None:
    writer = RecordingWriter()
    items = [f"item-{index}" for index in range(50)]

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        results = await asyncio.gather(*(group_commit.submit(item) for item in items))

        assert results == [f"stored:{item}" for item in items]

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=3, writers=2), scenario)

    sizes = [len(batch) for batch in writer.batches]
    assert max(sizes) <= 3
    assert max(sizes) > 1, f"no batch took more than one item: {writer.batches}"
    assert sorted(item for batch in writer.batches for item in batch) == sorted(items)


def test_item_error_raised_only_for_its_caller() -> None:
    bad_item_error = ValueError("the writer rejected this item")
    writer = RecordingWriter(held_batches=1, item_errors={"bad": bad_item_error})

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, queued_tasks = await queue_behind_held_batch(group_commit, writer, ["good-1", "bad", "good-2"])
        writer.release()
        results = await asyncio.gather(held_task, *queued_tasks, return_exceptions=True)

        assert results == ["stored:held", "stored:good-1", bad_item_error, "stored:good-2"]
        assert results[2] is bad_item_error

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=10, writers=1), scenario)

    assert writer.batches == [["held"], ["good-1", "bad", "good-2"]]


def test_writer_error_fails_whole_batch() -> None:
    writer = RecordingWriter(held_batches=1, failing_batches={1})

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, queued_tasks = await queue_behind_held_batch(group_commit, writer, ["a", "b", "c"])
        writer.release()
        results = await asyncio.gather(held_task, *queued_tasks, return_exceptions=True)
        later = await group_commit.submit("d")

        assert results[0] == "stored:held"
        assert results[1:] == [writer.batch_error] * 3
        assert later == "stored:d"

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=10, writers=1), scenario)

    assert writer.batches == [["held"], ["a", "b", "c"], ["d"]]


def test_caller_cancelled_before_batch_not_written() -> None:
    writer = RecordingWriter(held_batches=1)

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, [withdrawn, kept] = await queue_behind_held_batch(group_commit, writer, ["withdrawn", "kept"])
        withdrawn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await withdrawn
        writer.release()

        assert await held_task == "stored:held"
        assert await kept == "stored:kept"

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=10, writers=1), scenario)

    assert writer.batches == [["held"], ["kept"]]


def test_caller_cancelled_during_batch_still_written() -> None:
    writer = RecordingWriter(held_batches=1)

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        started = asyncio.ensure_future(group_commit.submit("started"))
        await writer.wait_for_batches(1)
        started.cancel()
        with pytest.raises(asyncio.CancelledError):
            await started
        writer.release()
        await group_commit.close()

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=10, writers=1), scenario)

    assert writer.batches == [["started"]]


def test_close_waits_then_rejects_new_items() -> None:
    writer = RecordingWriter(held_batches=1)

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, [queued] = await queue_behind_held_batch(group_commit, writer, ["queued"])
        closing = asyncio.ensure_future(group_commit.close())
        # close() must not finish while the writer keeps the batch waiting. The pause gives it the chance to.
        await asyncio.sleep(0.05)
        assert not closing.done()

        writer.release()
        await closing

        assert held_task.result() == "stored:held"
        # An item that was waiting when close() began is written too.
        assert queued.result() == "stored:queued"
        with pytest.raises(StorageUnavailable):
            await group_commit.submit("late")

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=10, writers=1), scenario)

    assert writer.batches == [["held"], ["queued"]]


def test_single_writer_never_overlaps_batches() -> None:
    writer = RecordingWriter(held_batches=1)

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, queued_tasks = await queue_behind_held_batch(group_commit, writer, ["a", "b"])
        # A second writer would start a batch now. The pause gives it the chance to.
        await asyncio.sleep(0.05)
        assert len(writer.batches) == 1

        writer.release()
        await asyncio.gather(held_task, *queued_tasks)
        for wave in range(20):
            await asyncio.gather(*(group_commit.submit(f"wave-{wave}-{index}") for index in range(10)))

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=4, writers=1), scenario)

    assert writer.max_overlap == 1
    assert writer.batches[1] == ["a", "b"]
    assert sum(len(batch) for batch in writer.batches) == 3 + 20 * 10


def test_two_writers_overlap_batches() -> None:
    # The counterpart of the test above shows that max_overlap detects overlapping batches.
    writer = RecordingWriter(held_batches=1)

    async def scenario(group_commit: GroupCommit[str, str]) -> None:
        held_task, [second] = await queue_behind_held_batch(group_commit, writer, ["second"])
        assert await second == "stored:second"
        writer.release()
        assert await held_task == "stored:held"

    run_with_group_commit(writer, GroupCommitSettings(max_batch_size=10, writers=2), scenario)

    assert writer.max_overlap == 2
    assert writer.batches == [["held"], ["second"]]
