"""A closed-loop gRPC load generator on grpc.aio, spread over worker processes.

Each worker process opens one channel and keeps its share of the calls in flight: a caller
sends the next call as soon as the previous one returns. Requests are serialized in advance
and sent as bytes, so the generator spends its CPU on gRPC and not on building messages.
When the spec names the idempotency key's field, a unique key is appended to each request
body. A protobuf parser keeps the last value of a scalar field that appears twice, so the
appended key wins over any key in the body.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import grpc

# Seconds from calling run_load to the first call, so that every worker process has started by then.
START_DELAY_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One measurement: which RPC, how many calls in flight, and for how long."""

    target: str
    method_path: str
    bodies: tuple[bytes, ...]
    in_flight: int
    processes: int
    warmup_seconds: float
    duration_seconds: float
    metadata: tuple[tuple[str, str], ...] = ()
    # Field number of the request's `idempotency_key`, or None to send the bodies unchanged.
    idempotency_key_field: int | None = None
    timeout_seconds: float = 10.0


@dataclass(slots=True)
class LoadResult:
    """Calls that finished inside the measured window, with their latencies in seconds."""

    duration_seconds: float
    latencies: list[float] = field(default_factory=list)
    status_counts: Counter[str] = field(default_factory=Counter)
    # Calls of the whole run, warm-up included, that ended with any status.
    calls_total: int = 0
    # CPU time of the generator's own processes inside the window, all threads included.
    generator_cpu_seconds: float = 0.0

    @property
    def calls(self) -> int:
        return sum(self.status_counts.values())

    @property
    def failures(self) -> int:
        return self.calls - self.status_counts.get("OK", 0)

    @property
    def calls_per_second(self) -> float:
        return self.status_counts.get("OK", 0) / self.duration_seconds

    def percentile_ms(self, fraction: float) -> float:
        """Return the latency at `fraction` (0.5 for the median) in milliseconds, nearest rank."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[rank] * 1000

    def merge(self, other: LoadResult) -> None:
        self.latencies.extend(other.latencies)
        self.status_counts.update(other.status_counts)
        self.calls_total += other.calls_total
        self.generator_cpu_seconds += other.generator_cpu_seconds


def measured_window(spec: LoadSpec, start_at: float) -> tuple[float, float]:
    """Return the wall-clock start and end of the measured window of a run that starts at `start_at`."""
    window_start = start_at + spec.warmup_seconds
    return window_start, window_start + spec.duration_seconds


def run_load(spec: LoadSpec, start_at: float | None = None) -> LoadResult:
    """Run the spec in `spec.processes` fresh worker processes and merge their results.

    The first calls go out at `start_at` (wall clock), by default START_DELAY_SECONDS from now.
    """
    if start_at is None:
        start_at = time.time() + START_DELAY_SECONDS
    shares = [
        spec.in_flight // spec.processes + (1 if index < spec.in_flight % spec.processes else 0)
        for index in range(spec.processes)
    ]
    context = multiprocessing.get_context("spawn")
    merged = LoadResult(duration_seconds=spec.duration_seconds)
    with ProcessPoolExecutor(max_workers=spec.processes, mp_context=context) as pool:
        futures = [
            pool.submit(_run_worker, spec, index, share, start_at) for index, share in enumerate(shares) if share > 0
        ]
        for future in futures:
            merged.merge(future.result())
    return merged


def _run_worker(spec: LoadSpec, worker_index: int, in_flight: int, start_at: float) -> LoadResult:
    return asyncio.run(_drive(spec, worker_index, in_flight, start_at))


async def _drive(spec: LoadSpec, worker_index: int, in_flight: int, start_at: float) -> LoadResult:
    result = LoadResult(duration_seconds=spec.duration_seconds)
    window_start, window_end = measured_window(spec, start_at)
    key_prefix = f"bench-{int(start_at * 1000)}-{worker_index}-"
    async with grpc.aio.insecure_channel(spec.target) as channel:
        # Without serializers the channel sends and returns raw bytes.
        call = channel.unary_unary(spec.method_path, request_serializer=None, response_deserializer=None)
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def caller(caller_index: int) -> None:
            sequence = caller_index
            # Workers start at different points of the mix, so they do not send the same request together.
            while time.time() < window_end:
                body = spec.bodies[(sequence + worker_index * 7919) % len(spec.bodies)]
                if spec.idempotency_key_field is not None:
                    body += _string_field(spec.idempotency_key_field, f"{key_prefix}{sequence}")
                sequence += in_flight
                started = time.perf_counter()
                try:
                    await call(body, metadata=spec.metadata, timeout=spec.timeout_seconds)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                finished_wall = time.time()
                result.calls_total += 1
                if window_start <= finished_wall <= window_end:
                    result.latencies.append(time.perf_counter() - started)
                    result.status_counts[code] += 1

        async def measure_own_cpu() -> None:
            await asyncio.sleep(max(0.0, window_start - time.time()))
            started = time.process_time()
            await asyncio.sleep(max(0.0, window_end - time.time()))
            result.generator_cpu_seconds = time.process_time() - started

        await asyncio.gather(measure_own_cpu(), *(caller(index) for index in range(in_flight)))
    return result


def _string_field(number: int, value: str) -> bytes:
    """Encode one length-delimited protobuf field (wire type 2) that contains `value` as UTF-8."""
    payload = value.encode()
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while True:
        low_bits = value & 0x7F
        value >>= 7
        if value:
            encoded.append(low_bits | 0x80)
        else:
            encoded.append(low_bits)
            return bytes(encoded)
