"""Command line of the benchmark: `python -m bench [options]`, run by `make bench`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from bench.environment import REPOSITORY, BenchSettings
from bench.suite import run_bench

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULTS = BenchSettings(admin_url=DEFAULT_ADMIN_URL, output_dir=REPOSITORY / "var" / "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL URL of a user with CREATEDB; the bench creates and drops a bench_* database there "
        f"(env BENCH_POSTGRES_URL, default {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULTS.output_dir,
        help="folder for logs, generated configs, results.md and results.json (default var/bench)",
    )
    parser.add_argument("--keep-database", action="store_true", help="keep the bench_* database for inspection")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of about 5 minutes with 3-second runs and 100,000 events; its figures are not "
        "comparable, and it ignores the size and duration options",
    )

    sizes = parser.add_argument_group("sizes and durations")
    sizes.add_argument("--warmup", type=float, default=DEFAULTS.warmup_seconds, help="seconds before each gRPC window")
    sizes.add_argument("--duration", type=float, default=DEFAULTS.duration_seconds, help="seconds per gRPC window")
    sizes.add_argument("--http-duration", type=int, default=DEFAULTS.http_duration_seconds, help="seconds per wrk run")
    sizes.add_argument(
        "--drain", type=float, default=DEFAULTS.drain_seconds, help="seconds to wait for recording after a wrk run"
    )
    sizes.add_argument("--contacts", type=int, default=DEFAULTS.contacts, help="contacts created through CreateContact")
    sizes.add_argument(
        "--gateway-messages", type=int, default=DEFAULTS.gateway_messages, help="messages signed for the gateway runs"
    )
    sizes.add_argument(
        "--stats-events",
        type=int,
        default=DEFAULTS.stats_events,
        help="events of the campaign that GetEngagementStats reads, a multiple of 4",
    )
    sizes.add_argument(
        "--soak-events",
        type=int,
        default=DEFAULTS.soak_events,
        help="events recorded through RecordEmailEvents while server memory is watched; 0 skips it",
    )
    sizes.add_argument(
        "--soak-max-seconds",
        type=float,
        default=DEFAULTS.soak_max_seconds,
        help="time limit of the memory soak, which then stops short of --soak-events",
    )
    return parser


def settings_from(arguments: argparse.Namespace) -> BenchSettings:
    if arguments.quick:
        return BenchSettings(
            admin_url=arguments.admin_url,
            output_dir=arguments.output_dir,
            keep_database=arguments.keep_database,
            warmup_seconds=1.0,
            duration_seconds=3.0,
            http_duration_seconds=3,
            drain_seconds=3.0,
            contacts=300,
            distinct_requests=2000,
            gateway_messages=300,
            stats_events=100_000,
            stats_calls=3,
            soak_events=120_000,
            soak_max_seconds=120.0,
        )
    return BenchSettings(
        admin_url=arguments.admin_url,
        output_dir=arguments.output_dir,
        keep_database=arguments.keep_database,
        warmup_seconds=arguments.warmup,
        duration_seconds=arguments.duration,
        http_duration_seconds=arguments.http_duration,
        drain_seconds=arguments.drain,
        contacts=arguments.contacts,
        gateway_messages=arguments.gateway_messages,
        stats_events=arguments.stats_events,
        soak_events=arguments.soak_events,
        soak_max_seconds=arguments.soak_max_seconds,
    )


def _stop_on_sigterm(_signal_number: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through the bench's finally blocks, which stop its processes and drop its database.
    raise SystemExit(143)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    return run_bench(settings_from(build_parser().parse_args()))


if __name__ == "__main__":
    sys.exit(main())
