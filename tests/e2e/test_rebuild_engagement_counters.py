"""`topmail-tracking rebuild-engagement-counters` run as a real process."""

from __future__ import annotations

import json
import random
from pathlib import Path

from server.adapters.database.engine import create_database_engine
from tests.e2e.test_command_line import run_cli
from tests.integration.test_engagement_counters import (
    add_workspace_and_contacts,
    assert_counts_match_events,
    counter_row_count,
    insert_events,
    random_events,
)


def test_rebuild_command_writes_counters(empty_database_url: str, tmp_path: Path) -> None:
    run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)
    engine = create_database_engine(empty_database_url)
    try:
        workspace_id, contact_ids = add_workspace_and_contacts(engine, 3)
        events = random_events(random.Random(3), workspace_id, contact_ids, 60)
        # Stored without counters, as by a bulk load that bypasses the service.
        insert_events(engine, events)

        result = run_cli("rebuild-engagement-counters", database_url=empty_database_url, cwd=tmp_path)

        assert result.returncode == 0, result.stderr
        logs = [json.loads(line) for line in result.stderr.splitlines()]
        rebuilt = [record for record in logs if record["message"].startswith("rebuilt engagement counters")]
        assert len(rebuilt) == 1
        assert rebuilt[0]["counter_rows"] == counter_row_count(engine)
        assert rebuilt[0]["counter_rows"] > 0
        assert_counts_match_events(engine, events, workspace_id)
    finally:
        engine.dispose()


def test_rebuild_command_needs_current_schema(empty_database_url: str, tmp_path: Path) -> None:
    result = run_cli("rebuild-engagement-counters", database_url=empty_database_url, cwd=tmp_path)

    assert result.returncode == 3
    assert "topmail-tracking migrate" in result.stderr
