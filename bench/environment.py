"""Settings, database, processes under test and shared state of one benchmark run."""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import api_calls, database, observe, workload
from bench.grpc_load import START_DELAY_SECONDS, LoadResult, LoadSpec, measured_window, run_load
from bench.processes import (
    ManagedProcess,
    MemorySample,
    free_port,
    grpc_channel_ready,
    grpc_health_serving,
    wait_until,
)
from bench.report import Row

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parent.parent
SERVICE_PATH = "/topmail.tracking.v1.TrackingService/"
TRACK_PRODUCT_VIEW = "TrackProductView"
RECORD_EMAIL_EVENT = "RecordEmailEvent"
RECORD_EMAIL_EVENTS = "RecordEmailEvents"
# Field numbers of `idempotency_key` in TrackProductViewRequest and RecordEmailEventRequest.
IDEMPOTENCY_KEY_FIELDS = {TRACK_PRODUCT_VIEW: 13, RECORD_EMAIL_EVENT: 15}
SEED_CAMPAIGN = "seed-campaign"
SEED_EVENTS = 10_000
GATEWAY_SPOOL_NAME = "gateway-spool.sqlite3"


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """Sizes and durations of one run; with the defaults `make bench` takes about 20 minutes on 2 cores."""

    admin_url: str
    output_dir: Path
    warmup_seconds: float = 3.0
    duration_seconds: float = 15.0
    http_duration_seconds: int = 15
    drain_seconds: float = 20.0
    contacts: int = 2000
    distinct_requests: int = 20_000
    gateway_messages: int = 8000
    stats_events: int = 1_000_000
    stats_calls: int = 5
    load_processes: int = 2
    # Events recorded through RecordEmailEvents to check that server memory stays flat.
    soak_events: int = 1_000_000
    soak_max_seconds: float = 900.0
    keep_database: bool = False


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    """Memory of the server, and of the gateway while it runs, after one phase."""

    phase: str
    events_stored: int
    server: MemorySample | None
    gateway: MemorySample | None


@dataclass(frozen=True, slots=True)
class Measured:
    """A load result with what was observed beside it in the same window."""

    result: LoadResult
    # CPU use per process group as a percentage of one core, as text for the table.
    cpu: str
    # Mean number of the database's backends waiting on a lock; NaN where not sampled.
    lock_waits: float


@dataclass
class BenchState:
    """State that the phases share: the API key, the request mixes, and the results so far."""

    database_name: str
    database_url: str
    api_key: str = ""
    workspace_id: str = ""
    link_settings: dict[str, str] = field(default_factory=dict)
    contacts: list[workload.BenchContact] = field(default_factory=list)
    bodies: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    bulk_loaded_events: int = 0
    rows: list[Row] = field(default_factory=list)
    memory: list[MemoryPoint] = field(default_factory=list)
    raw: dict[str, object] = field(default_factory=dict)


class BenchRun:
    """Owns the processes and the database of one run; `close` stops and drops all of them."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.out = settings.output_dir
        name = database.new_database_name()
        self.state = BenchState(database_name=name, database_url=database.database_url(settings.admin_url, name))
        # Seeded so that every run sends the same request mix; nothing here is a secret.
        self.rng = random.Random(20261204)  # noqa: S311
        self.noop_target = f"127.0.0.1:{free_port()}"
        self.server_target = f"127.0.0.1:{free_port()}"
        self.gateway_port = free_port()
        self.nginx_port = free_port()
        self._processes: list[ManagedProcess] = []
        self._database_created = False
        self.noop: ManagedProcess | None = None
        self.server: ManagedProcess | None = None
        self.gateway: ManagedProcess | None = None

    def prepare(self) -> None:
        """Create and migrate the database, create the workspace, and start both gRPC servers."""
        self.out.mkdir(parents=True, exist_ok=True)
        # A spool left by an earlier run contains hits signed with that run's keys, which would be replayed here.
        for leftover in self.out.glob(f"{GATEWAY_SPOOL_NAME}*"):
            leftover.unlink()
        database.create_database(self.settings.admin_url, self.state.database_name)
        self._database_created = True
        self.cli("migrate")
        created = self.cli("create-workspace", "bench", "--mode", "test")
        key = re.search(r"API key \(shown only now[^)]*\): (\S+)", created)
        workspace = re.search(r"workspace: bench \(([0-9a-f-]{36})\)", created)
        if key is None or workspace is None:
            raise RuntimeError(f"unexpected create-workspace output:\n{created}")
        self.state.api_key = key.group(1)
        self.state.workspace_id = workspace.group(1)
        secrets_text = self.cli("dev-secrets", "--tracking-base-url", f"http://127.0.0.1:{self.gateway_port}")
        self.state.link_settings = dict(
            line.split("=", 1) for line in secrets_text.splitlines() if line.startswith("TOPMAIL_")
        )

        self.noop = self.start(
            "no-op gRPC server",
            [sys.executable, "-m", "bench.noop_server", "--listen", self.noop_target],
            "noop-server.log",
        )
        self.server = self.start(
            "gRPC server", [self.tool("topmail-tracking"), "serve", "--grpc-listen", self.server_target], "server.log"
        )
        wait_until(grpc_channel_ready(self.noop_target), self.noop, 60, "accepting connections")
        wait_until(grpc_health_serving(self.server_target), self.server, 120, "SERVING")

    def close(self) -> None:
        """Stop every started process, newest first, then drop the database unless asked to keep it."""
        for process in reversed(self._processes):
            try:
                process.stop()
            except OSError as error:
                logger.error("could not stop %s (pid %d): %s", process.name, process.pid, error)
        if not self._database_created:
            return
        if self.settings.keep_database:
            logger.info("kept database %s (--keep-database); drop it with dropdb", self.state.database_name)
        else:
            database.drop_database(self.settings.admin_url, self.state.database_name)

    def service_env(self) -> dict[str, str]:
        """Return this environment without TOPMAIL_* variables, plus the run's database and link secrets."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("TOPMAIL_")}
        env.update(self.state.link_settings)
        env.update({"TOPMAIL_DATABASE_URL": self.state.database_url, "TOPMAIL_LOG_FORMAT": "json"})
        return env

    def tool(self, name: str) -> str:
        """Return the path of a console script installed beside the running Python."""
        return str(Path(sys.executable).parent / name)

    def cli(self, *arguments: str) -> str:
        """Run a `topmail-tracking` command against the run's database and return its output."""
        completed = subprocess.run(  # noqa: S603 - the project's own command line
            [self.tool("topmail-tracking"), *arguments],
            env=self.service_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"topmail-tracking {arguments[0]} failed:\n{completed.stdout}{completed.stderr}")
        return completed.stdout

    def start(self, name: str, command: list[str], log_name: str) -> ManagedProcess:
        process = ManagedProcess(name, command, self.out / log_name, env=self.service_env())
        self._processes.append(process)
        return process

    def events_stored_through_api(self) -> int:
        views = database.count_rows(self.state.database_url, "product_views")
        events = database.count_rows(self.state.database_url, "email_events")
        return views + events - self.state.bulk_loaded_events

    def sample_memory(self, phase: str) -> None:
        assert self.server is not None
        point = MemoryPoint(
            phase=phase,
            events_stored=self.events_stored_through_api(),
            server=self.server.memory(),
            gateway=self.gateway.memory() if self.gateway is not None else None,
        )
        self.state.memory.append(point)
        logger.info("memory after %s: %s", phase, point)

    def server_meters(self) -> dict[str, observe.CpuMeter]:
        """Return CPU meters of the real server process and of its PostgreSQL backends."""
        assert self.server is not None
        server_pid = self.server.pid
        name = self.state.database_name
        return {
            "server": observe.CpuMeter.of_process(server_pid),
            "PG": observe.CpuMeter(lambda: observe.postgres_backend_pids(name)),
        }

    def grpc_load(
        self,
        target: str,
        rpc: str,
        in_flight: int,
        meters: dict[str, observe.CpuMeter],
        bodies: tuple[bytes, ...] | None = None,
    ) -> Measured:
        """Run one load measurement with the CPU use, and lock waits on the real server, inside its window.

        The requests are the RPC's mix from the workload unless `bodies` are given.
        """
        spec = LoadSpec(
            target=target,
            method_path=SERVICE_PATH + rpc,
            bodies=bodies if bodies is not None else self.state.bodies[rpc],
            in_flight=in_flight,
            processes=self.settings.load_processes,
            warmup_seconds=self.settings.warmup_seconds,
            duration_seconds=self.settings.duration_seconds,
            metadata=api_calls.bearer(self.state.api_key),
            idempotency_key_field=IDEMPOTENCY_KEY_FIELDS[rpc],
        )
        start_at = time.time() + START_DELAY_SECONDS
        lock_waits = (
            observe.LockWaits(self.settings.admin_url, self.state.database_name)
            if target == self.server_target
            else None
        )
        with observe.WindowSampler(meters, *measured_window(spec, start_at), lock_waits=lock_waits) as sampler:
            result = run_load(spec, start_at)
        measured = Measured(
            result=result,
            cpu=sampler.describe(load=100 * result.generator_cpu_seconds / spec.duration_seconds),
            lock_waits=lock_waits.mean() if lock_waits is not None else float("nan"),
        )
        logger.info(
            "%s %s at %d in flight: %.0f calls/s, p50 %.1f ms, p99 %.1f ms, statuses %s, CPU %s, lock waits %.1f",
            target,
            rpc,
            in_flight,
            result.calls_per_second,
            result.percentile_ms(0.5),
            result.percentile_ms(0.99),
            dict(result.status_counts),
            measured.cpu,
            measured.lock_waits,
        )
        return measured
