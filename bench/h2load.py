"""gRPC load with h2load: one pre-serialized request sent over and over by a C client.

h2load cannot vary the request body and reads only the HTTP status, not the `grpc-status`
trailer, so it serves as a cross-check of the Python generator's own cost and not as the main
measurement. It reports the mean latency but no percentiles.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.processes import find_tool


@dataclass(frozen=True, slots=True)
class H2loadResult:
    requests_per_second: float
    succeeded: int
    failed: int
    mean_latency_ms: float


def write_grpc_frame(path: Path, body: bytes) -> Path:
    """Write `body` as one uncompressed gRPC message: a zero flag byte and a 4-byte big-endian length."""
    path.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
    return path


def run_h2load(
    url: str,
    frame: Path,
    *,
    in_flight: int,
    warmup_seconds: int,
    duration_seconds: int,
    metadata: tuple[tuple[str, str], ...] = (),
) -> H2loadResult:
    """Send the framed request over one HTTP/2 connection with `in_flight` concurrent streams."""
    command = [
        find_tool("h2load"),
        "--clients=1",
        "--threads=1",
        f"--max-concurrent-streams={in_flight}",
        f"--warm-up-time={warmup_seconds}",
        f"--duration={duration_seconds}",
        f"--data={frame}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        *(f"--header={name}: {value}" for name, value in metadata),
        url,
    ]
    completed = subprocess.run(  # noqa: S603 - fixed arguments built by the bench
        command, capture_output=True, text=True, timeout=warmup_seconds + duration_seconds + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"h2load failed with code {completed.returncode}: {completed.stderr.strip()}")
    return parse_h2load_output(completed.stdout)


def parse_h2load_output(output: str) -> H2loadResult:
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", output)
    latency = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output)
    if rate is None or counts is None or latency is None:
        raise RuntimeError(f"unexpected h2load output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
    return H2loadResult(
        requests_per_second=float(rate.group(1)),
        succeeded=int(counts.group(1)),
        failed=int(counts.group(2)),
        mean_latency_ms=float(latency.group(1)) * scale,
    )
