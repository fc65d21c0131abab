"""Observations taken beside the load: CPU time from /proc, the server's call log, and machine facts."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psycopg

from bench.processes import find_tool

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU time of a process, or None once it has exited."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may contain spaces, start at field 3 (state).
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def postgres_backend_pids(database: str) -> list[int]:
    """Return the PIDs of PostgreSQL processes that work for `database`, found by their process titles.

    A backend's title reads "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" and an autovacuum
    worker's "postgres: [CLUSTER: ]autovacuum worker DATABASE", so the database is one whole word.
    """
    pids = []
    name = database.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if command_line.startswith(b"postgres: ") and name in command_line.replace(b"\0", b" ").split():
            pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU use of a changing set of processes over one interval, as a percentage of one core.

    `poll` finds processes that started during the interval, such as PostgreSQL backends of
    connections the pool opens under load; they count from zero. A process that exits between
    two polls loses the CPU it used since the last one.
    """

    def __init__(self, find_pids: Callable[[], Iterable[int]]) -> None:
        self._find_pids = find_pids
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._started_at = 0.0

    @classmethod
    def of_process(cls, pid: int) -> CpuMeter:
        return cls(lambda: [pid])

    def start(self, now: float) -> None:
        self._started_at = now
        self._first = {pid: cpu for pid in self._find_pids() if (cpu := process_cpu_seconds(pid)) is not None}
        self._last = dict(self._first)

    def poll(self) -> None:
        for pid in [*self._find_pids(), *self._last]:
            cpu = process_cpu_seconds(pid)
            if cpu is None:
                continue
            self._first.setdefault(pid, 0.0)
            self._last[pid] = cpu

    def percent(self, now: float) -> float:
        """Poll once more and return the CPU used since `start`."""
        self.poll()
        used = sum(self._last[pid] - first for pid, first in self._first.items())
        elapsed = now - self._started_at
        return 100.0 * used / elapsed if elapsed > 0 else 0.0


def machine_busy_seconds() -> float:
    """Return the CPU time all cores spent busy since boot, from the first line of /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user, nice, system, idle, iowait, irq, softirq, steal: everything but idle and iowait is busy.
    ticks = [int(value) for value in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS_PER_SECOND


class LockWaits:
    """Backends of one database that wait on a lock, counted in pg_stat_activity at each poll."""

    def __init__(self, admin_url: str, database: str) -> None:
        self._admin_url = admin_url
        self._database = database
        self.samples: list[int] = []

    def poll(self, connection: psycopg.Connection[tuple[int]]) -> None:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (self._database,),
        ).fetchone()
        self.samples.append(int(row[0]) if row else 0)

    def connect(self) -> psycopg.Connection[tuple[int]]:
        return psycopg.connect(self._admin_url, autocommit=True)

    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


class WindowSampler:
    """Sampler of CPU meters, of the whole machine's CPU and optionally of lock waits over one window.

    The window is given in wall-clock seconds, and the sampler polls twice a second inside it.
    """

    POLL_SECONDS = 0.5

    def __init__(
        self,
        meters: dict[str, CpuMeter],
        window_start: float,
        window_end: float,
        lock_waits: LockWaits | None = None,
    ) -> None:
        self._meters = meters
        self._window = (window_start, window_end)
        self.lock_waits = lock_waits
        self.percent: dict[str, float] = {}
        self.machine_percent = float("nan")
        self._thread = threading.Thread(target=self._measure, name="window-sampler", daemon=True)

    def __enter__(self) -> WindowSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exception: object) -> None:
        self._thread.join()

    def _measure(self) -> None:
        window_start, window_end = self._window
        connection = self.lock_waits.connect() if self.lock_waits is not None else None
        try:
            time.sleep(max(0.0, window_start - time.time()))
            started = time.monotonic()
            machine_started = machine_busy_seconds()
            for meter in self._meters.values():
                meter.start(started)
            while (remaining := window_end - time.time()) > 0:
                time.sleep(min(self.POLL_SECONDS, remaining))
                for meter in self._meters.values():
                    meter.poll()
                if self.lock_waits is not None and connection is not None:
                    self.lock_waits.poll(connection)
            ended = time.monotonic()
            self.percent = {name: meter.percent(ended) for name, meter in self._meters.items()}
            self.machine_percent = 100.0 * (machine_busy_seconds() - machine_started) / (ended - started)
        finally:
            if connection is not None:
                connection.close()

    def describe(self, **measured_elsewhere: float) -> str:
        """Return the readings as "server 95, PG 30, other 5" for the table.

        "other" is the machine's busy CPU that none of the named processes used: the load tool
        where it is not named, the kernel's network work, and any program outside the bench.
        """
        readings = {**self.percent, **measured_elsewhere}
        other = self.machine_percent - sum(readings.values())
        parts = [f"{name} {value:.0f}" for name, value in readings.items()]
        return ", ".join([*parts, f"other {max(0.0, other):.0f}"])


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def rpc_codes_since(log_path: Path, offset: int, rpc_suffix: str) -> Counter[str]:
    """Count the status codes of `rpc finished` lines for one RPC, written after `offset` (JSON log lines)."""
    codes: Counter[str] = Counter()
    with log_path.open("rb") as log:
        log.seek(offset)
        for line in log:
            if b'"rpc finished"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if str(record.get("rpc", "")).endswith(rpc_suffix):
                codes[str(record.get("code"))] += 1
    return codes


@dataclass(frozen=True, slots=True)
class MachineFacts:
    cpu_model: str
    cores: int
    memory_gib: float
    kernel: str
    python: str
    grpcio: str
    postgresql: str
    nginx: str
    wrk: str
    h2load: str
    load_average: str
    autovacuum: str


def machine_facts(postgresql_version: str, autovacuum: bool) -> MachineFacts:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return MachineFacts(
        cpu_model=model.group(1).strip() if model else "unknown",
        cores=os.cpu_count() or 0,
        memory_gib=int(memory.group(1)) / 1024 / 1024 if memory else 0.0,
        kernel=platform.release(),
        python=platform.python_version(),
        grpcio=metadata.version("grpcio"),
        postgresql=postgresql_version,
        nginx=_tool_version("nginx", "-v", r"nginx/(\S+)"),
        wrk=_tool_version("wrk", "--version", r"wrk (\S+)"),
        h2load=_tool_version("h2load", "--version", r"nghttp2/(\S+)"),
        load_average=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
        autovacuum="on" if autovacuum else "off",
    )


def _tool_version(tool: str, option: str, pattern: str) -> str:
    # nginx prints its version on stderr, and wrk exits with 1 after printing it.
    completed = subprocess.run(  # noqa: S603 - a fixed option of an installed tool
        [find_tool(tool), option], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(pattern, completed.stdout + completed.stderr)
    return match.group(1) if match else "unknown"
