"""The `topmail-tracking` command run as a real process: migrate, keys, serve and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from tests.e2e.test_track_product_view import create_contact, example_request, track
from tests.support import ApiCaller

KEY_PATTERN = re.compile(r"tm_(?:live|test)_[A-Za-z0-9_-]{32,}")


def run_cli(*arguments: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", *arguments, "--database-url", database_url],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TOPMAIL_LOG_FORMAT": "json"},
        check=False,
    )


def read_log_until(stream: IO[str], message: str, timeout: float = 30.0) -> dict[str, object]:
    """Return the first JSON log line with the given message, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        record = json.loads(line)
        if record.get("message") == message:
            return dict(record)
    raise AssertionError(f"log line {message!r} not seen within {timeout} s")


def test_serve_refuses_outdated_schema(empty_database_url: str, tmp_path: Path) -> None:
    result = run_cli("serve", "--grpc-listen", "127.0.0.1:0", database_url=empty_database_url, cwd=tmp_path)

    assert result.returncode == 3
    assert "topmail-tracking migrate" in result.stderr
    assert "no migrations applied" in result.stderr


def test_migrate_is_repeatable(empty_database_url: str, tmp_path: Path) -> None:
    first = run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)
    second = run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "Running upgrade" in first.stderr
    assert "Running upgrade" not in second.stderr


def test_dev_workspace_key_printed_once(empty_database_url: str, tmp_path: Path) -> None:
    run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)

    first = run_cli("ensure-dev-workspace", database_url=empty_database_url, cwd=tmp_path)
    second = run_cli("ensure-dev-workspace", database_url=empty_database_url, cwd=tmp_path)

    assert first.returncode == 0
    assert len(KEY_PATTERN.findall(first.stdout)) == 1
    assert KEY_PATTERN.findall(first.stdout)[0].startswith("tm_test_")
    assert second.returncode == 0
    assert KEY_PATTERN.findall(second.stdout) == []
    assert "create-api-key development" in second.stdout


def test_workspace_commands(empty_database_url: str, tmp_path: Path) -> None:
    run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)

    created = run_cli("create-workspace", "acme", database_url=empty_database_url, cwd=tmp_path)
    duplicate = run_cli("create-workspace", "acme", database_url=empty_database_url, cwd=tmp_path)
    extra_key = run_cli("create-api-key", "acme", "--mode", "test", database_url=empty_database_url, cwd=tmp_path)
    unknown = run_cli("create-api-key", "nobody", database_url=empty_database_url, cwd=tmp_path)

    assert created.returncode == 0
    assert KEY_PATTERN.findall(created.stdout)[0].startswith("tm_live_")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert extra_key.returncode == 0
    assert KEY_PATTERN.findall(extra_key.stdout)[0].startswith("tm_test_")
    assert unknown.returncode == 1
    assert "no workspace named 'nobody'" in unknown.stderr


def test_invalid_environment_setting_is_reported(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TOPMAIL_DB_POOL_SIZE": "many"},
        check=False,
    )

    assert result.returncode == 2
    assert "TOPMAIL_DB_POOL_SIZE='many'" in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_tracks_and_stops_on_signal(empty_database_url: str, tmp_path: Path, stop_signal: signal.Signals) -> None:
    run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)
    created = run_cli("create-workspace", "shop", database_url=empty_database_url, cwd=tmp_path)
    api_key = KEY_PATTERN.findall(created.stdout)[0]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.entrypoints.cli",
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--database-url",
            empty_database_url,
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TOPMAIL_LOG_FORMAT": "json"},
    )
    try:
        assert process.stderr is not None
        started = read_log_until(process.stderr, "gRPC server started")
        caller = ApiCaller(f"127.0.0.1:{started['port']}", api_key)
        create_contact(caller)
        view = track(caller, example_request()).product_view
        caller.close()

        process.send_signal(stop_signal)
        read_log_until(process.stderr, "gRPC server stopped")
        return_code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    assert view.product_id == "prod_abc123"
    assert return_code == 0


def test_network_data_lists_sources_with_age(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", "network-data"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert {"microsoft_eop", "aws", "apple_private_relay"} <= {row[0] for row in rows}
    assert all(int(row[-1]) >= 0 for row in rows)


def test_network_data_reports_bad_folder(tmp_path: Path) -> None:
    (tmp_path / "broken.txt").write_text("not a network list\n", encoding="utf-8")

    result = subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", "network-data", "--network-data-dir", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "broken.txt" in result.stderr


def test_refresh_command_takes_its_own_options(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", "refresh-network-data", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0
    assert "--source-url" in result.stdout


@pytest.mark.parametrize("database_url", ["postgresql://postgres@127.0.0.1:1/none", "mysql://localhost/x", "not a url"])
def test_bad_database_is_one_line_error(tmp_path: Path, database_url: str) -> None:
    result = run_cli("migrate", database_url=database_url, cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "migrate failed" in result.stderr


def test_newer_schema_is_not_told_to_migrate(empty_database_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    from server.adapters.database.engine import create_database_engine

    run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)
    engine = create_database_engine(empty_database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()

    result = run_cli("serve", "--grpc-listen", "127.0.0.1:0", database_url=empty_database_url, cwd=tmp_path)

    assert result.returncode == 3
    assert "a newer version migrated it" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--trigger-pruning-interval-seconds", "0"),
        ("--trigger-retention-hours", "-1"),
        ("--trigger-retention-hours", "inf"),
    ],
)
def test_bad_pruning_setting_is_one_line_error(empty_database_url: str, tmp_path: Path, flag: str, value: str) -> None:
    run_cli("migrate", database_url=empty_database_url, cwd=tmp_path)

    result = run_cli(
        "serve", "--grpc-listen", "127.0.0.1:0", flag, value, database_url=empty_database_url, cwd=tmp_path
    )

    assert result.returncode == 1
    assert flag in result.stderr
    assert "Traceback" not in result.stderr
