"""Recording gateway hits without delaying readers: batched sends, and a durable spool on failure.

A hit is queued in memory and the reader gets the response at once. A sender task sends queued hits to the gRPC
server in batches. Hits the server cannot take right now go to the SQLite spool, and a replay
task sends them again until the server stores or rejects them. Every hit carries its
idempotency key, so a hit sent twice is stored once. A hit is dropped only when the server
rejects it as invalid or the spool is full, and each drop is logged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from server.adapters.spool import SqliteSpool
from topmail.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

logger = logging.getLogger(__name__)

# Per-hit and whole-call codes after which the same hit can succeed later.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# A hit that gets a retryable error from the server this many times in a row is dropped and
# logged, so that one hit the server cannot store never blocks the spool for good.
MAX_HIT_ATTEMPTS = 50
# A failure to send or spool marks the recorder unhealthy for this long.
UNHEALTHY_SECONDS = 60.0


class HitOutcome(enum.Enum):
    """Outcome of one sent hit."""

    STORED = "stored"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class HitResult:
    outcome: HitOutcome
    detail: str = ""


class HitSinkUnavailable(Exception):
    """The whole batch could not be delivered; every hit in it may be sent again."""


class HitSink(Protocol):
    async def record(self, hits: list[tracking_service_pb2.TrackingHit]) -> list[HitResult]: ...


class GrpcHitSink:
    """Sends hits with TrackingService.RecordTrackingHits, authenticated with the gateway secret."""

    def __init__(self, channel: grpc.aio.Channel, gateway_secret: str, timeout_seconds: float = 5.0) -> None:
        self._stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {gateway_secret}"),)
        self._timeout_seconds = timeout_seconds

    async def record(self, hits: list[tracking_service_pb2.TrackingHit]) -> list[HitResult]:
        request = tracking_service_pb2.RecordTrackingHitsRequest(hits=hits)
        try:
            response = await self._stub.RecordTrackingHits(
                request, metadata=self._metadata, timeout=self._timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            # Misconfiguration (a wrong secret) is also kept for later: the hits are valid.
            raise HitSinkUnavailable(f"{error.code().name}: {error.details()}") from error
        results = []
        for result in response.results:
            code = _CODES_BY_NUMBER.get(result.status.code, grpc.StatusCode.UNKNOWN)
            if code is grpc.StatusCode.OK:
                results.append(HitResult(HitOutcome.STORED))
            elif code in RETRYABLE_CODES:
                results.append(HitResult(HitOutcome.RETRY, f"{code.name}: {result.status.message}"))
            else:
                results.append(HitResult(HitOutcome.REJECTED, f"{code.name}: {result.status.message}"))
        if len(results) != len(hits):
            raise HitSinkUnavailable(f"the server returned {len(results)} results for {len(hits)} hits")
        return results


@dataclass
class RecorderCounters:
    """Totals since the gateway started, reported by its health endpoint."""

    stored: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0
    dropped: int = 0


class HitRecorder:
    """Queues hits, sends them in batches, and spools what cannot be sent."""

    def __init__(
        self,
        sink: HitSink,
        spool: SqliteSpool,
        *,
        batch_size: int = 500,
        linger_seconds: float = 0.005,
        queue_size: int = 10_000,
        senders: int = 2,
        replay_interval_seconds: float = 1.0,
        max_replay_interval_seconds: float = 30.0,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._batch_size = batch_size
        self._linger_seconds = linger_seconds
        self._queue: asyncio.Queue[tracking_service_pb2.TrackingHit] = asyncio.Queue(maxsize=queue_size)
        self._replay_interval = replay_interval_seconds
        self._max_replay_interval = max_replay_interval_seconds
        self._senders = senders
        # The batch each sender task is sending, by sender number.
        self._in_flight: dict[int, list[tracking_service_pb2.TrackingHit]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Hits that arrived while the queue was full, spooled by one task at a time.
        self._overflow: list[tracking_service_pb2.TrackingHit] = []
        self._overflow_flush: asyncio.Task[None] | None = None
        self.counters = RecorderCounters()
        self.last_failure: str | None = None
        self._last_failure_at = float("-inf")

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def sending(self) -> int:
        """Return how many hits are in batches that senders have taken from the queue and not finished."""
        return sum(len(batch) for batch in self._in_flight.values())

    def spooled_hits(self) -> int:
        """Return how many hits wait in the spool; this reads the spool file."""
        return len(self._spool)

    @property
    def healthy(self) -> bool:
        """Whether sending and spooling worked during the last minute."""
        return asyncio.get_running_loop().time() - self._last_failure_at > UNHEALTHY_SECONDS

    def _mark_failure(self, message: str, error: BaseException) -> None:
        self.last_failure = f"{message}: {type(error).__name__}: {error}"[:300]
        self._last_failure_at = asyncio.get_running_loop().time()
        logger.error(message, extra={"error": type(error).__name__, "detail": str(error)[:200]})

    def submit(self, hit: tracking_service_pb2.TrackingHit) -> None:
        """Queue a hit without waiting; when the queue is full, the hit goes to the spool in a batch."""
        try:
            self._queue.put_nowait(hit)
        except asyncio.QueueFull:
            self._overflow.append(hit)
            if self._overflow_flush is None or self._overflow_flush.done():
                self._overflow_flush = asyncio.ensure_future(self._spool_overflow())

    async def _spool_overflow(self) -> None:
        """Spool the hits that did not fit into the queue, many per spool transaction."""
        while self._overflow:
            batch, self._overflow = self._overflow[: self._batch_size], self._overflow[self._batch_size :]
            try:
                await self._spool_hits(batch, "queue full")
            except Exception as error:
                self.counters.dropped += len(batch)
                self._mark_failure(f"{len(batch)} tracking hits dropped: the queue is full and the spool failed", error)

    def start(self) -> None:
        # Several senders keep batches in flight while the server records earlier ones.
        senders = [asyncio.ensure_future(self._send_forever(number)) for number in range(self._senders)]
        self._tasks = [*senders, asyncio.ensure_future(self._replay_forever())]

    async def stop(self) -> None:
        """Stop sending and spool every hit not yet recorded, so a restart loses nothing."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._overflow_flush is not None:
            await asyncio.gather(self._overflow_flush, return_exceptions=True)
        remaining = [hit for batch in self._in_flight.values() for hit in batch]
        remaining += self._overflow
        self._overflow = []
        while not self._queue.empty():
            remaining.append(self._queue.get_nowait())
        if not remaining:
            return
        try:
            await self._spool_hits(remaining, "gateway stopping")
        except Exception as error:
            self.counters.dropped += len(remaining)
            logger.error(
                "tracking hits lost at shutdown: the spool failed",
                extra={"hits": len(remaining), "error": type(error).__name__, "detail": str(error)[:200]},
            )

    async def _send_forever(self, sender: int) -> None:
        while True:
            batch = [await self._queue.get()]
            # Registered before any wait, so that stop() spools the batch if it cancels this task.
            self._in_flight[sender] = batch
            if self._queue.qsize() < self._batch_size - 1:
                # Lets more hits arrive, so that a trickle of hits still goes out in batches.
                await asyncio.sleep(self._linger_seconds)
            # Taking what is queued without waiting costs far less per hit than a timed get.
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            pause = 1.0
            while True:
                try:
                    await self._deliver(batch)
                    break
                except Exception as error:
                    # The batch stays in memory and is sent again; nothing is dropped here.
                    self._mark_failure("sending or spooling tracking hits failed; retrying", error)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, self._max_replay_interval)
            del self._in_flight[sender]

    async def _deliver(self, batch: list[tracking_service_pb2.TrackingHit]) -> None:
        try:
            results = await self._sink.record(batch)
        except HitSinkUnavailable as error:
            await self._spool_hits(batch, str(error))
            return
        retry = []
        for hit, result in zip(batch, results, strict=True):
            if result.outcome is HitOutcome.STORED:
                self.counters.stored += 1
            elif result.outcome is HitOutcome.RETRY:
                retry.append(hit)
            else:
                self._log_rejected(hit, result.detail)
        if retry:
            await self._spool_hits(retry, results[0].detail if results else "retry")

    async def _spool_hits(self, hits: list[tracking_service_pb2.TrackingHit], reason: str) -> None:
        entries = [(hit.idempotency_key, hit.SerializeToString()) for hit in hits]
        dropped = await asyncio.to_thread(self._spool.add, entries)
        stored = len(hits) - len(dropped)
        self.counters.spooled += stored
        if stored:
            logger.warning("tracking hits spooled", extra={"hits": stored, "reason": reason[:200]})
        if dropped:
            self.counters.dropped += len(dropped)
            self.last_failure = f"{len(dropped)} tracking hits dropped: the spool is full"
            self._last_failure_at = asyncio.get_running_loop().time()
            logger.error(
                "tracking hits dropped: the spool is full",
                extra={"hits": len(dropped), "max_hits": self._spool.max_hits, "first_key": dropped[0]},
            )

    async def _replay_forever(self) -> None:
        interval = self._replay_interval
        while True:
            await asyncio.sleep(interval)
            try:
                entries = await asyncio.to_thread(self._spool.oldest, self._batch_size)
                if not entries:
                    interval = self._replay_interval
                    continue
                delivered = await self._replay(entries)
            except Exception as error:
                self._mark_failure("replaying spooled tracking hits failed; retrying", error)
                delivered = False
            interval = self._replay_interval if delivered else min(interval * 2, self._max_replay_interval)

    async def _replay(self, entries: list[tuple[str, bytes, int]]) -> bool:
        """Send spooled hits again; return False when the server could not be reached."""
        hits = [tracking_service_pb2.TrackingHit.FromString(payload) for _, payload, _ in entries]
        try:
            results = await self._sink.record(hits)
        except HitSinkUnavailable as error:
            logger.info(
                "spooled tracking hits still not recordable", extra={"hits": len(hits), "reason": str(error)[:200]}
            )
            return False

        finished = []
        retried = []
        stored = 0
        for (key, _, attempts), hit, result in zip(entries, hits, results, strict=True):
            if result.outcome is HitOutcome.RETRY and attempts + 1 < MAX_HIT_ATTEMPTS:
                retried.append(key)
                continue
            finished.append(key)
            if result.outcome is HitOutcome.STORED:
                stored += 1
            elif result.outcome is HitOutcome.RETRY:
                self.counters.dropped += 1
                logger.error(
                    "tracking hit dropped after repeated server errors",
                    extra={"idempotency_key": hit.idempotency_key, "attempts": attempts + 1, "reason": result.detail},
                )
            else:
                self._log_rejected(hit, result.detail)

        await asyncio.to_thread(self._spool.count_attempt, retried)
        await asyncio.to_thread(self._spool.remove, finished)
        # Counted only once the spool forgot them, so a failed removal cannot count them twice.
        self.counters.replayed += stored
        logger.info(
            "spooled tracking hits replayed", extra={"hits": len(finished), "left": len(entries) - len(finished)}
        )
        return True

    def _log_rejected(self, hit: tracking_service_pb2.TrackingHit, detail: str) -> None:
        self.counters.rejected += 1
        logger.warning(
            "tracking hit dropped: the server rejected it",
            extra={"idempotency_key": hit.idempotency_key, "reason": detail[:200]},
        )
