"""HitRecorder with hand-written sinks and spools: failures never lose or silently drop hits."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from server.adapters.spool import SqliteSpool
from server.entrypoints.gateway.recording import (
    MAX_HIT_ATTEMPTS,
    HitOutcome,
    HitRecorder,
    HitResult,
    HitSinkUnavailable,
)
from topmail.tracking.v1 import tracking_service_pb2


def hit() -> tracking_service_pb2.TrackingHit:
    return tracking_service_pb2.TrackingHit(token="t", idempotency_key=uuid.uuid4().hex)


class ScriptedSink:
    """Returns one outcome for every hit, or raises while `down` is set."""

    def __init__(self, outcome: HitOutcome = HitOutcome.STORED) -> None:
        self.outcome = outcome
        self.down = False
        self.received: list[str] = []

    async def record(self, hits: list[tracking_service_pb2.TrackingHit]) -> list[HitResult]:
        if self.down:
            raise HitSinkUnavailable("UNAVAILABLE: down")
        self.received.extend(item.idempotency_key for item in hits)
        return [HitResult(self.outcome, "INTERNAL: boom") for _ in hits]


class BrokenSpool(SqliteSpool):
    """A spool whose disk is full until `broken` is cleared."""

    broken = True

    def add(self, hits: list[tuple[str, bytes]]) -> list[str]:
        if self.broken:
            raise OSError("database or disk is full")
        return super().add(hits)


async def wait_until(condition: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_failed_spool_write_keeps_batch_and_reports(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = ScriptedSink()
        sink.down = True
        spool = BrokenSpool(tmp_path / "spool.sqlite3", 100)
        recorder = HitRecorder(sink, spool, linger_seconds=0.001, max_replay_interval_seconds=0.05)
        recorder.start()
        sent = [hit() for _ in range(3)]
        for item in sent:
            recorder.submit(item)
        await wait_until(lambda: recorder.last_failure is not None)
        assert not recorder.healthy

        sink.down = False
        await wait_until(lambda: len(sink.received) == 3)
        await recorder.stop()

        assert sorted(sink.received) == sorted(item.idempotency_key for item in sent)
        assert recorder.counters.dropped == 0

    asyncio.run(scenario())


def test_hit_retried_too_often_is_dropped_and_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = ScriptedSink(HitOutcome.RETRY)
        spool = SqliteSpool(tmp_path / "spool.sqlite3", 100)
        recorder = HitRecorder(sink, spool, linger_seconds=0.001, replay_interval_seconds=0.001)
        recorder.start()
        recorder.submit(hit())
        await wait_until(lambda: recorder.counters.dropped == 1, seconds=20)
        await recorder.stop()

        assert len(spool) == 0
        # The first send from the queue, then MAX_HIT_ATTEMPTS sends from the spool.
        assert len(sink.received) == MAX_HIT_ATTEMPTS + 1

    asyncio.run(scenario())


def test_shutdown_spools_queued_hits(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = ScriptedSink()
        sink.down = True
        spool = SqliteSpool(tmp_path / "spool.sqlite3", 100)
        recorder = HitRecorder(sink, spool, linger_seconds=0.001, replay_interval_seconds=60)
        recorder.start()
        for _ in range(5):
            recorder.submit(hit())
        await asyncio.sleep(0.05)
        await recorder.stop()

        assert len(spool) == 5

    asyncio.run(scenario())


def test_stop_while_batch_lingers_spools_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = ScriptedSink()
        spool = SqliteSpool(tmp_path / "spool.sqlite3", 100)
        recorder = HitRecorder(sink, spool, linger_seconds=60, replay_interval_seconds=60)
        recorder.start()
        recorder.submit(hit())
        # Lets a sender take the hit from the queue and start its linger.
        await asyncio.sleep(0.05)

        assert recorder.queued == 0
        assert recorder.sending == 1

        await recorder.stop()

        assert len(spool) == 1

    asyncio.run(scenario())


def test_full_spool_drops_and_counts(tmp_path: Path) -> None:
    spool = SqliteSpool(tmp_path / "spool.sqlite3", 2)

    dropped = spool.add([("a", b"1"), ("b", b"2"), ("c", b"3")])

    assert dropped == ["c"]
    assert len(spool) == 2


def test_spool_keeps_a_key_once(tmp_path: Path) -> None:
    spool = SqliteSpool(tmp_path / "spool.sqlite3", 10)

    spool.add([("a", b"1")])
    spool.add([("a", b"1")])

    assert len(spool) == 1


def test_spool_needs_room(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 hit"):
        SqliteSpool(tmp_path / "spool.sqlite3", 0)


def test_unusable_spool_path_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(ValueError, match="--spool-path"):
        SqliteSpool(blocker / "spool.sqlite3", 10)


def test_full_spool_marks_recorder_unhealthy(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = ScriptedSink()
        sink.down = True
        recorder = HitRecorder(sink, SqliteSpool(tmp_path / "spool.sqlite3", 1), linger_seconds=0.001)
        recorder.start()
        for _ in range(3):
            recorder.submit(hit())
        await wait_until(lambda: recorder.counters.dropped == 2)

        assert not recorder.healthy
        await recorder.stop()

    asyncio.run(scenario())


def test_hits_beyond_full_queue_are_spooled_in_batches(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = ScriptedSink()
        sink.down = True
        spool = SqliteSpool(tmp_path / "spool.sqlite3", 1000)
        recorder = HitRecorder(sink, spool, queue_size=2, linger_seconds=60, replay_interval_seconds=60)
        recorder.start()
        for _ in range(200):
            recorder.submit(hit())
        await recorder.stop()

        assert len(spool) == 200
        assert recorder.counters.dropped == 0

    asyncio.run(scenario())
