"""One benchmark run from start to end, in a fixed order that is part of the method.

E-mail event inserts are measured first on a table with 10,000 stored events and again after
the 1-million-event campaign is loaded. Server memory is sampled after every phase, next to the
number of events stored through the API so far.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from bench import database, observe, phases
from bench.environment import BenchRun, BenchSettings
from bench.report import render_markdown, rows_as_dicts


def run_bench(settings: BenchSettings) -> int:
    """Run every phase, print the table, and write results.md and results.json to the output folder."""
    run = BenchRun(settings)
    started = time.monotonic()
    facts: observe.MachineFacts | None = None
    try:
        run.prepare()
        facts = observe.machine_facts(
            database.server_version(settings.admin_url), database.autovacuum_enabled(settings.admin_url)
        )
        phases.prepare_workload(run)
        inserts_at_seed = phases.measure_grpc(run)
        phases.measure_h2load(run)
        phases.measure_gateway(run)
        phases.measure_large_table(run, inserts_at_seed)
        phases.measure_memory_soak(run)
        phases.add_memory_rows(run)
    finally:
        run.close()

    summary = machine_summary(facts, time.monotonic() - started)
    table = render_markdown(run.state.rows)
    print(f"\n{summary}\n\n{table}")
    (settings.output_dir / "results.md").write_text(f"{summary}\n\n{table}\n")
    document = {
        "machine": asdict(facts) if facts else None,
        "settings": asdict(settings),
        "rows": rows_as_dicts(run.state.rows),
        "memory": [asdict(point) for point in run.state.memory],
        "raw": run.state.raw,
    }
    (settings.output_dir / "results.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    return 0


def machine_summary(facts: observe.MachineFacts | None, elapsed_seconds: float) -> str:
    if facts is None:
        return "machine facts unavailable"
    return (
        f"{facts.cpu_model}, {facts.cores} cores, {facts.memory_gib:.1f} GiB, Linux {facts.kernel}; "
        f"Python {facts.python}, grpcio {facts.grpcio}, PostgreSQL {facts.postgresql}, nginx {facts.nginx}, "
        f"wrk {facts.wrk}, h2load {facts.h2load}; PostgreSQL autovacuum {facts.autovacuum}; "
        f"load average before the run {facts.load_average}; "
        f"the run took {elapsed_seconds / 60:.1f} min"
    )
