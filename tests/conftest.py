"""Shared fixtures: a throwaway database per backend and a real gRPC server on an ephemeral port.

Every test that takes `database_url` (directly or through `grpc_server`) runs once on SQLite
and once on PostgreSQL. PostgreSQL comes from TEST_DATABASE_URL (default: the local server);
each run creates its own database and drops it at the end. When PostgreSQL cannot be reached,
those tests are skipped with a warning outside CI and fail when CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from server.adapters.database.engine import create_database_engine, normalize_database_url
from server.adapters.database.migrations import upgrade_to_latest
from tests.support import ApiCaller, RunningServer, create_workspace_key

# Link signing keys of the test servers: "current" signs, "previous" still verifies.
CURRENT_LINK_KEY = "current:" + "Y3VycmVudC1rZXktMzItYnl0ZXMtb2YtdGVzdC1zZWNyZXQ"
PREVIOUS_LINK_KEY = "previous:" + "cHJldmlvdXMta2V5LTMyLWJ5dGVzLW9mLXRlc3Qtc2VjcmV0"
LINK_SIGNING_KEYS = f"{CURRENT_LINK_KEY},{PREVIOUS_LINK_KEY}"
GATEWAY_SECRET = "gateway-secret-for-tests-0123456789abcdef"
TRACKING_BASE_URL = "https://t.example.com"

DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


def _postgres_unreachable_reason() -> str | None:
    url = normalize_database_url(postgres_server_url())
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except OperationalError as error:
        return f"PostgreSQL at {url.render_as_string(hide_password=True)} is unreachable: {error.orig}"
    return None


_POSTGRES_PROBLEM: list[str | None] = []


def postgres_problem() -> str | None:
    if not _POSTGRES_PROBLEM:
        _POSTGRES_PROBLEM.append(_postgres_unreachable_reason())
    return _POSTGRES_PROBLEM[0]


def pytest_report_header() -> str:
    problem = postgres_problem()
    if problem is None:
        return f"PostgreSQL: {make_url(postgres_server_url()).render_as_string(hide_password=True)}"
    consequence = "tests FAIL because CI=true" if IN_CI else "PostgreSQL tests are SKIPPED"
    return f"!!! {problem}; {consequence} !!!"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problem = postgres_problem()
    if problem is not None and not IN_CI:
        terminalreporter.write_line(f"!!! PostgreSQL tests were SKIPPED: {problem} !!!", red=True, bold=True)


def _create_postgres_database() -> tuple[str, Engine]:
    """Create a throwaway database and return its URL and an AUTOCOMMIT engine on the server."""
    server_url = normalize_database_url(postgres_server_url())
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"topmail_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    return server_url.set(database=name).render_as_string(hide_password=False), admin


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a migrated throwaway database, once per backend."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "tracking.sqlite3"
        url = f"sqlite:///{path}"
        _migrate(url)
        yield url
        return

    _require_postgres()
    url, admin = _create_postgres_database()
    try:
        _migrate(url)
        yield url
    finally:
        _drop_postgres_database(admin, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database without any tables, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    _require_postgres()
    url, admin = _create_postgres_database()
    try:
        yield url
    finally:
        _drop_postgres_database(admin, url)


def _require_postgres() -> None:
    problem = postgres_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem}; CI=true requires PostgreSQL")
        pytest.skip(problem)


def _drop_postgres_database(admin: Engine, url: str) -> None:
    name = make_url(url).database
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrate(url: str) -> None:
    engine = create_database_engine(url)
    try:
        upgrade_to_latest(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def database_engine(database_url: str) -> Iterator[Engine]:
    """An engine for tests that inspect or disturb the database directly."""
    engine = create_database_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def grpc_server(database_url: str) -> Iterator[RunningServer]:
    """The real gRPC application on 127.0.0.1 with an ephemeral port."""
    server = RunningServer.start(
        database_url,
        link_signing_keys=LINK_SIGNING_KEYS,
        gateway_secret=GATEWAY_SECRET,
        tracking_base_url=TRACKING_BASE_URL,
    )
    yield server
    server.stop()


@pytest.fixture
def api(grpc_server: RunningServer, database_engine: Engine) -> Iterator[ApiCaller]:
    """A client authenticated with the key of a new workspace, so tests never share data."""
    caller = ApiCaller(grpc_server.address, create_workspace_key(database_engine))
    yield caller
    caller.close()


@pytest.fixture
def other_api(grpc_server: RunningServer, database_engine: Engine) -> Iterator[ApiCaller]:
    """A client of a second, unrelated workspace."""
    caller = ApiCaller(grpc_server.address, create_workspace_key(database_engine))
    yield caller
    caller.close()
