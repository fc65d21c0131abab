"""The measurements of a run, each adding its rows to the table."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import api_calls, database, h2load, http_load, observe, workload
from bench.environment import (
    GATEWAY_SPOOL_NAME,
    RECORD_EMAIL_EVENT,
    RECORD_EMAIL_EVENTS,
    SEED_CAMPAIGN,
    SEED_EVENTS,
    SERVICE_PATH,
    TRACK_PRODUCT_VIEW,
    BenchRun,
    Measured,
    MemoryPoint,
)
from bench.grpc_load import LoadResult, LoadSpec, run_load
from bench.processes import ManagedProcess, MemorySample, find_tool, http_ok, wait_until
from bench.report import Row, milliseconds, number, ratio, verdict

logger = logging.getLogger(__name__)

STATS_CAMPAIGN = "campaign-1m"
HTTP_CONNECTIONS = 64
# Targets of the project, each a ratio to a ceiling measured in the same run, or a limit.
MIN_RATE_RATIO_GRPC = 0.5
MAX_P99_RATIO_GRPC = 3.0
MIN_RATE_RATIO_HTTP = 0.35
MAX_STATS_MS = 200.0
MAX_MEMORY_GROWTH = 0.10
# The memory target compares the server's RSS at this many events recorded in the soak with its end.
SOAK_CHECKPOINT_EVENTS = 100_000
SOAK_EVENTS_PER_CALL = 100
SOAK_DISTINCT_CALLS = 1000
SOAK_IN_FLIGHT = 8
SOAK_WINDOW_SECONDS = 20.0


def prepare_workload(run: BenchRun) -> None:
    """Create the contacts, store the seed events and serialize the request mixes."""
    state = run.state
    state.contacts = api_calls.create_contacts(run.server_target, state.api_key, run.settings.contacts)
    database.load_campaign(state.database_url, state.workspace_id, SEED_CAMPAIGN, SEED_EVENTS)
    state.bulk_loaded_events += SEED_EVENTS
    # Bulk loads bypass the write path, which keeps the engagement counters current.
    run.cli("rebuild-engagement-counters")
    addresses = workload.AddressPool(run.rng)
    count = run.settings.distinct_requests
    state.bodies[TRACK_PRODUCT_VIEW] = workload.product_view_bodies(run.rng, state.contacts, count)
    state.bodies[RECORD_EMAIL_EVENT] = workload.click_bodies(run.rng, state.contacts, addresses, count)
    run.sample_memory("setup")


# gRPC


def measure_grpc(run: BenchRun) -> LoadResult:
    """Measure both RPCs at 256 and 16 in flight, on the no-op server and on the real server.

    Returns the RecordEmailEvent result at 256 in flight, the insert rate with the seed events stored.
    """
    assert run.noop is not None
    noop_pid = run.noop.pid
    inserts_at_seed: LoadResult | None = None
    for in_flight in (256, 16):
        for rpc in (TRACK_PRODUCT_VIEW, RECORD_EMAIL_EVENT):
            noop_meters = {"no-op": observe.CpuMeter.of_process(noop_pid)}
            ceiling = run.grpc_load(run.noop_target, rpc, in_flight, noop_meters)
            events_before = database.count_rows(run.state.database_url, "email_events")
            real = run.grpc_load(run.server_target, rpc, in_flight, run.server_meters())
            run.sample_memory(f"{rpc} at {in_flight} in flight")

            load = f"{in_flight} in flight"
            if rpc == RECORD_EMAIL_EVENT and in_flight == 256:
                load += f", {number(events_before)} events stored"
                inserts_at_seed = real.result
            run.state.rows.append(_load_row(f"{rpc}, no-op server (ceiling)", load, ceiling))
            run.state.rows.append(
                _judge_grpc(_load_row(f"{rpc}, real server", load, real), real.result, ceiling.result, in_flight)
            )
            run.state.raw[f"grpc {rpc} {in_flight}"] = {"ceiling": _load_summary(ceiling), "real": _load_summary(real)}
    assert inserts_at_seed is not None
    return inserts_at_seed


def _load_row(measurement: str, load: str, measured: Measured) -> Row:
    result = measured.result
    failed = {code: count for code, count in sorted(result.status_counts.items()) if code != "OK"}
    not_ok = f"{number(result.failures)} of {number(result.calls)}"
    if failed:
        not_ok += " (" + ", ".join(f"{code} {count}" for code, count in failed.items()) + ")"
    return Row(
        measurement=measurement,
        load=load,
        rate=f"{number(result.calls_per_second)} calls/s",
        p50_ms=milliseconds(result.percentile_ms(0.5)),
        p99_ms=milliseconds(result.percentile_ms(0.99)),
        not_ok=not_ok,
        cpu=measured.cpu,
        lock_waits="" if math.isnan(measured.lock_waits) else f"{measured.lock_waits:.1f}",
    )


def _judge_grpc(row: Row, real: LoadResult, ceiling: LoadResult, in_flight: int) -> Row:
    """Hold the rate at 256 in flight, and the p99 at 16 in flight, against the no-op server's."""
    if in_flight == 256:
        rate_ratio = ratio(real.calls_per_second, ceiling.calls_per_second)
        return replace(
            row,
            ratio=f"{rate_ratio:.3f} of rate",
            target=f">= {MIN_RATE_RATIO_GRPC} of rate",
            result=verdict(rate_ratio >= MIN_RATE_RATIO_GRPC, f"{rate_ratio:.3f}"),
        )
    p99_ratio = ratio(real.percentile_ms(0.99), ceiling.percentile_ms(0.99))
    return replace(
        row,
        ratio=f"{p99_ratio:.1f}x p99",
        target=f"p99 <= {MAX_P99_RATIO_GRPC:.0f}x",
        result=verdict(p99_ratio <= MAX_P99_RATIO_GRPC, f"{p99_ratio:.1f}x"),
    )


def _load_summary(measured: Measured) -> dict[str, object]:
    result = measured.result
    return {
        "calls_per_second": result.calls_per_second,
        "p50_ms": result.percentile_ms(0.5),
        "p99_ms": result.percentile_ms(0.99),
        "statuses": dict(result.status_counts),
        "calls_including_warmup": result.calls_total,
        "cpu_percent_of_one_core": measured.cpu,
        "backends_waiting_on_a_lock": measured.lock_waits,
    }


def measure_h2load(run: BenchRun) -> None:
    """Cross-check TrackProductView at 256 in flight with h2load, which sends one fixed request.

    The request has no idempotency key, so that every call stores a new view. h2load cannot see
    gRPC statuses, so the real server's are counted from its call log.
    """
    assert run.noop is not None
    assert run.server is not None
    frame = h2load.write_grpc_frame(run.out / "track-product-view.grpc", run.state.bodies[TRACK_PRODUCT_VIEW][0])
    warmup = max(1, round(run.settings.warmup_seconds))
    duration = max(1, round(run.settings.duration_seconds))
    noop_pid = run.noop.pid
    targets = (
        ("no-op server (ceiling)", run.noop_target, {"no-op": observe.CpuMeter.of_process(noop_pid)}),
        ("real server", run.server_target, run.server_meters()),
    )
    for label, target, meters in targets:
        log_offset = observe.log_size(run.server.log_path)
        # The window starts when h2load's warm-up should end, late by the time h2load takes to connect.
        window_start = time.time() + warmup
        with observe.WindowSampler(meters, window_start, window_start + duration) as sampler:
            result = h2load.run_h2load(
                f"http://{target}{SERVICE_PATH}{TRACK_PRODUCT_VIEW}",
                frame,
                in_flight=256,
                warmup_seconds=warmup,
                duration_seconds=duration,
                metadata=api_calls.bearer(run.state.api_key),
            )
        not_ok = f"{number(result.failed)} of {number(result.succeeded + result.failed)} (HTTP status)"
        if target == run.server_target:
            codes = _settled_codes(run.server.log_path, log_offset, TRACK_PRODUCT_VIEW)
            cancelled = codes.pop("CANCELLED", 0)
            failed = sum(count for code, count in codes.items() if code != "OK")
            not_ok = (
                f"{number(failed)} of {number(sum(codes.values()))} (server log, warm-up included), "
                f"{number(cancelled)} cancelled when h2load stopped"
            )
        run.state.rows.append(
            Row(
                measurement=f"{TRACK_PRODUCT_VIEW}, {label}, h2load, one fixed request",
                load="256 streams on 1 connection",
                rate=f"{number(result.requests_per_second)} calls/s",
                p50_ms=f"mean {milliseconds(result.mean_latency_ms)}",
                not_ok=not_ok,
                cpu=sampler.describe(),
            )
        )
        run.state.raw[f"h2load {label}"] = {**asdict(result), "cpu_percent_of_one_core": sampler.describe()}
    run.sample_memory("h2load cross-check")


def _settled_codes(log_path: Path, offset: int, rpc: str) -> Counter[str]:
    """Count the RPC's status codes in the server log once no new call has been logged for a second.

    Calls that h2load leaves in flight when it stops end as CANCELLED a little later.
    """
    codes = observe.rpc_codes_since(log_path, offset, rpc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1)
        latest = observe.rpc_codes_since(log_path, offset, rpc)
        if latest == codes:
            break
        codes = latest
    return codes


# The HTTP gateway


@dataclass(frozen=True, slots=True)
class GatewayCounters:
    """The recording counters that the gateway's GET /healthz returns."""

    recorded: int
    queued: int
    spooled: int
    rejected: int
    dropped: int


def read_gateway_counters(port: int) -> GatewayCounters:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
        document = json.load(response)
    return GatewayCounters(
        recorded=int(document["stored_hits"]) + int(document["replayed_hits"]),
        queued=int(document["queued_hits"]),
        spooled=int(document["spooled_hits"]),
        rejected=int(document["rejected_hits"]),
        dropped=int(document["dropped_hits"]),
    )


def measure_gateway(run: BenchRun) -> None:
    """Measure the open pixel and the click redirect on nginx and on the gateway, and what it recorded.

    Each kind gets a fresh gateway process with an empty spool, so that hits still waiting
    from the pixel run do not count as, or hold back, hits of the click run.
    """
    pixels, clicks = api_calls.tracking_paths(
        run.server_target, run.state.api_key, run.state.contacts, run.settings.gateway_messages, links_per_message=2
    )
    run.sample_memory("InstrumentEmail")
    addresses = workload.AddressPool(run.rng, size=800)
    client_addresses = [*addresses.residential, *addresses.datacenter]
    agents = [*workload.BROWSER_USER_AGENTS, *workload.BOT_USER_AGENTS]
    nginx_prefix = run.out / "nginx"
    nginx_config = http_load.write_nginx_config(nginx_prefix, run.nginx_port)
    nginx = run.start("nginx", [find_tool("nginx"), "-p", str(nginx_prefix), "-c", str(nginx_config)], "nginx.log")
    wait_until(http_ok(f"http://127.0.0.1:{run.nginx_port}/o/probe.gif"), nginx, 30, "serving")

    kinds = (("pixel", "open pixel", "opened", pixels), ("click", "click redirect", "clicked", clicks))
    for kind, label, event_type, paths in kinds:
        script = http_load.write_wrk_script(run.out / f"{kind}.lua", paths, agents, client_addresses)
        nginx_result = _wrk(run, run.nginx_port, script)
        gateway = _start_gateway(run, kind)
        run.sample_memory(f"gateway {kind}: started")
        before = read_gateway_counters(run.gateway_port)
        meters = {"gateway": observe.CpuMeter.of_process(gateway.pid), **run.server_meters()}
        started = time.time()
        with observe.WindowSampler(meters, started, started + run.settings.http_duration_seconds) as sampler:
            gateway_result = _wrk(run, run.gateway_port, script)
        at_end = read_gateway_counters(run.gateway_port)
        run.sample_memory(f"gateway {kind}: after the run")
        time.sleep(run.settings.drain_seconds)
        drained = read_gateway_counters(run.gateway_port)
        in_database = database.count_recorded_hits(run.state.database_url, api_calls.GATEWAY_CAMPAIGN, event_type)
        run.sample_memory(f"gateway {kind}: after the drain")
        # Stopping writes the hits still queued to this gateway's spool, which no later run reads.
        gateway.stop()
        run.gateway = None
        _add_gateway_rows(
            run, label, nginx_result, gateway_result, sampler.describe(), (before, at_end, drained), in_database
        )


def _start_gateway(run: BenchRun, kind: str) -> ManagedProcess:
    run.gateway = run.start(
        f"gateway for the {kind} run",
        [
            run.tool("topmail-tracking"),
            "gateway",
            "--gateway-listen",
            f"127.0.0.1:{run.gateway_port}",
            "--grpc-target",
            run.server_target,
            # wrk connects from 127.0.0.1 and names the client in X-Forwarded-For.
            "--trusted-proxies",
            "127.0.0.1",
            "--spool-path",
            str(run.out / f"{GATEWAY_SPOOL_NAME}-{kind}"),
        ],
        f"gateway-{kind}.log",
    )
    wait_until(http_ok(f"http://127.0.0.1:{run.gateway_port}/healthz"), run.gateway, 60, "serving")
    return run.gateway


def _wrk(run: BenchRun, port: int, script: Path) -> http_load.WrkResult:
    return http_load.run_wrk(
        f"http://127.0.0.1:{port}",
        script,
        connections=HTTP_CONNECTIONS,
        threads=1,
        duration_seconds=run.settings.http_duration_seconds,
    )


def _add_gateway_rows(
    run: BenchRun,
    label: str,
    nginx: http_load.WrkResult,
    gateway: http_load.WrkResult,
    cpu: str,
    counters: tuple[GatewayCounters, GatewayCounters, GatewayCounters],
    in_database: int,
) -> None:
    before, at_end, drained = counters
    rate_ratio = ratio(gateway.requests_per_second, nginx.requests_per_second)
    rows = run.state.rows
    rows.append(_wrk_row(f"{label}, nginx (ceiling)", nginx, ""))
    rows.append(
        replace(
            _wrk_row(f"{label}, gateway with recording", gateway, cpu),
            ratio=f"{rate_ratio:.3f} of rate",
            target=f">= {MIN_RATE_RATIO_HTTP} of rate",
            result=verdict(rate_ratio >= MIN_RATE_RATIO_HTTP, f"{rate_ratio:.3f}"),
        )
    )
    recorded_at_end = at_end.recorded - before.recorded
    recorded_after_drain = drained.recorded - before.recorded
    rows.append(
        Row(
            measurement=f"{label}: hits the gateway recorded",
            load=f"by the end of the run / {run.settings.drain_seconds:.0f} s later",
            rate=f"{number(recorded_at_end)} / {number(recorded_after_drain)} of {number(gateway.requests)} served",
            not_ok=f"{number(drained.rejected - before.rejected)} rejected, "
            f"{number(drained.dropped - before.dropped)} dropped",
            ratio=f"{ratio(recorded_after_drain, gateway.requests):.3f} recorded",
            result=f"{number(in_database)} in the database; waiting: {number(drained.queued)} queued, "
            f"{number(drained.spooled)} spooled",
        )
    )
    run.state.raw[f"gateway {label}"] = {
        "nginx": asdict(nginx),
        "gateway": asdict(gateway),
        "cpu_percent_of_one_core": cpu,
        "counters_before": asdict(before),
        "counters_at_end": asdict(at_end),
        "counters_after_drain": asdict(drained),
        "hits_in_database_after_drain": in_database,
    }


def _wrk_row(measurement: str, result: http_load.WrkResult, cpu: str) -> Row:
    return Row(
        measurement=measurement,
        load=f"{HTTP_CONNECTIONS} connections, 1 wrk thread",
        rate=f"{number(result.requests_per_second)} req/s",
        p50_ms=milliseconds(result.p50_ms),
        p99_ms=milliseconds(result.p99_ms),
        not_ok=f"{number(result.bad_responses + result.socket_errors)} of {number(result.requests)}",
        cpu=cpu,
    )


# The large table


def measure_large_table(run: BenchRun, inserts_at_seed: LoadResult) -> None:
    """Load the large campaign, time GetEngagementStats on it, and measure inserts again."""
    state = run.state
    events = run.settings.stats_events
    started = time.perf_counter()
    database.load_campaign(state.database_url, state.workspace_id, STATS_CAMPAIGN, events)
    state.bulk_loaded_events += events
    state.raw["bulk_load_seconds"] = time.perf_counter() - started
    logger.info("stored %d events in %.1f s", events, state.raw["bulk_load_seconds"])
    started = time.perf_counter()
    # Bulk loads bypass the write path, which keeps the engagement counters current.
    run.cli("rebuild-engagement-counters")
    state.raw["counter_rebuild_seconds"] = time.perf_counter() - started
    logger.info("rebuilt engagement counters in %.1f s", state.raw["counter_rebuild_seconds"])

    seconds = api_calls.time_engagement_stats(
        run.server_target, state.api_key, STATS_CAMPAIGN, run.settings.stats_calls
    )
    durations_ms = [value * 1000 for value in seconds]
    median = statistics.median(durations_ms)
    state.rows.append(
        Row(
            measurement=f"GetEngagementStats, campaign of {number(events)} events, with bots",
            load=f"{len(durations_ms)} calls one after another",
            rate=f"max {milliseconds(max(durations_ms))} ms",
            p50_ms=milliseconds(median),
            not_ok=f"0 of {len(durations_ms)}",
            ratio=f"{median / MAX_STATS_MS:.1f}x limit",
            target=f"median < {MAX_STATS_MS:.0f} ms",
            result=verdict(median < MAX_STATS_MS, f"{milliseconds(median)} ms"),
        )
    )
    state.raw["engagement_stats_ms"] = durations_ms
    run.sample_memory("GetEngagementStats")

    events_before = database.count_rows(state.database_url, "email_events")
    addresses = workload.AddressPool(run.rng)
    fresh_clicks = workload.click_bodies(
        run.rng, state.contacts, addresses, run.settings.distinct_requests, workload.LATER_CAMPAIGNS
    )
    large = run.grpc_load(run.server_target, RECORD_EMAIL_EVENT, 256, run.server_meters(), fresh_clicks)
    run.sample_memory("RecordEmailEvent on the large table")
    insert_ratio = ratio(large.result.calls_per_second, inserts_at_seed.calls_per_second)
    row = _load_row(
        f"{RECORD_EMAIL_EVENT}, real server", f"256 in flight, {number(events_before)} events stored", large
    )
    state.rows.append(replace(row, ratio=f"{insert_ratio:.2f} of the rate at {number(SEED_EVENTS)} events"))
    state.raw["grpc RecordEmailEvent 256 large table"] = _load_summary(large)


# Memory


def measure_memory_soak(run: BenchRun) -> None:
    """Record events through RecordEmailEvents and compare server RSS at 100,000 events and at the end."""
    settings = run.settings
    if settings.soak_events <= 0:
        return
    addresses = workload.AddressPool(run.rng)
    bodies = workload.click_batch_bodies(
        run.rng, run.state.contacts, addresses, SOAK_DISTINCT_CALLS, SOAK_EVENTS_PER_CALL, workload.SOAK_CAMPAIGNS
    )
    first_count = run.events_stored_through_api()

    # With autovacuum off, as on some test machines, dead counter rows and stale planner statistics
    # pile up and slow every batch. Vacuuming between windows does what the default setting does.
    vacuum_between_windows = not database.autovacuum_enabled(run.state.database_url)
    run.state.raw["soak_vacuums_between_windows"] = vacuum_between_windows
    started = time.monotonic()
    deadline = started + settings.soak_max_seconds

    checkpoints: list[MemoryPoint] = []
    for goal in sorted({min(SOAK_CHECKPOINT_EVENTS, settings.soak_events), settings.soak_events}):
        while run.events_stored_through_api() - first_count < goal and time.monotonic() < deadline:
            window = min(SOAK_WINDOW_SECONDS, max(1.0, deadline - time.monotonic()))
            spec = LoadSpec(
                target=run.server_target,
                method_path=SERVICE_PATH + RECORD_EMAIL_EVENTS,
                bodies=bodies,
                in_flight=SOAK_IN_FLIGHT,
                processes=1,
                warmup_seconds=0.0,
                duration_seconds=window,
                metadata=api_calls.bearer(run.state.api_key),
                timeout_seconds=60.0,
            )
            result = run_load(spec)
            if result.failures:
                logger.warning("soak calls failed: %s", dict(result.status_counts))
            if vacuum_between_windows:
                database.vacuum_analyze(run.state.database_url)
        run.sample_memory(f"soak: {number(goal)} events")
        checkpoints.append(run.state.memory[-1])

    elapsed = time.monotonic() - started
    recorded = run.events_stored_through_api() - first_count
    state = run.state
    state.raw["soak"] = {"events": recorded, "seconds": elapsed}
    state.rows.append(_soak_row(checkpoints, recorded, elapsed, settings.soak_events))


def _soak_row(checkpoints: list[MemoryPoint], recorded: int, elapsed: float, goal: int) -> Row:
    first, last = _sample_of("server", checkpoints[0]), _sample_of("server", checkpoints[-1])
    growth = ratio(last.rss_kib - first.rss_kib, first.rss_kib)
    reached = "" if recorded >= goal else f", stopped by the time limit at {number(recorded)} of {number(goal)}"
    return Row(
        measurement=f"RSS of the server over the soak, peak {last.peak_rss_kib / 1024:.0f} MiB",
        load=f"RecordEmailEvents, {SOAK_EVENTS_PER_CALL} events per call, {SOAK_IN_FLIGHT} in flight",
        rate=f"{recorded / elapsed:,.0f} events/s; {first.rss_kib / 1024:.0f} / {last.rss_kib / 1024:.0f} MiB",
        ratio=f"{growth:+.1%}",
        target=f"within {MAX_MEMORY_GROWTH:.0%}",
        result=verdict(
            abs(growth) <= MAX_MEMORY_GROWTH,
            f"{growth:+.1%} from {number(checkpoints[0].events_stored)} to "
            f"{number(checkpoints[-1].events_stored)} events stored{reached}",
        ),
    )


def add_memory_rows(run: BenchRun) -> None:
    """Add the RSS of the server (warm against the end) and of each gateway process."""
    points = run.state.memory
    # The server's first point is before any load, its second after the first real-server run.
    with_server = [point for point in points if point.server is not None]
    if len(with_server) >= 3:
        run.state.rows.append(_memory_row("server", with_server[0], with_server[1], with_server[-1]))
    for kind in ("pixel", "click"):
        with_gateway = [
            point for point in points if point.gateway is not None and point.phase.startswith(f"gateway {kind}:")
        ]
        if len(with_gateway) == 3:
            run.state.rows.append(_gateway_memory_row(kind, *with_gateway))


def _gateway_memory_row(kind: str, started: MemoryPoint, after_run: MemoryPoint, drained: MemoryPoint) -> Row:
    samples = [_sample_of("gateway", point) for point in (started, after_run, drained)]
    return Row(
        measurement=f"RSS of the gateway of the {kind} run, peak {samples[2].peak_rss_kib / 1024:.0f} MiB",
        load="before load / after the run / after the drain",
        rate=" / ".join(f"{sample.rss_kib / 1024:.0f}" for sample in samples) + " MiB",
        ratio=f"{ratio(samples[1].rss_kib - samples[0].rss_kib, samples[0].rss_kib):+.0%} under load",
    )


def _memory_row(name: str, cold: MemoryPoint, warm: MemoryPoint, last: MemoryPoint) -> Row:
    samples = [_sample_of(name, point) for point in (cold, warm, last)]
    growth = ratio(samples[2].rss_kib - samples[1].rss_kib, samples[1].rss_kib)
    return Row(
        measurement=f"RSS of the {name}, peak {samples[2].peak_rss_kib / 1024:.0f} MiB",
        load=f"before load / after {warm.phase} / at the end",
        rate=" / ".join(f"{sample.rss_kib / 1024:.0f}" for sample in samples) + " MiB",
        ratio=f"{growth:+.1%} from {number(warm.events_stored)} to {number(last.events_stored)} events stored",
    )


def _sample_of(name: str, point: MemoryPoint) -> MemorySample:
    sample = point.server if name == "server" else point.gateway
    assert sample is not None
    return sample
