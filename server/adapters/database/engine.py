"""Engine creation for SQLite and PostgreSQL from one database URL."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool limits; SQLite ignores them except for the pool size."""

    size: int = 10
    max_overflow: int = 5
    timeout_seconds: float = 10.0


def normalize_database_url(database_url: str) -> URL:
    """Parse a database URL and pick psycopg 3 for plain `postgresql://` URLs."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database URL scheme {url.drivername!r}: use sqlite:/// or postgresql://")
    return url


def create_database_engine(database_url: str, pool: PoolSettings | None = None) -> Engine:
    """Create an engine: SQLite in WAL mode with immediate write locks, or pooled PostgreSQL."""
    pool = pool or PoolSettings()
    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, pool)
    return create_engine(
        url,
        # Errors and logs would otherwise carry bound parameters, such as e-mail addresses.
        hide_parameters=True,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_seconds,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": "topmail-tracking"},
    )


def _create_sqlite_engine(url: URL, pool: PoolSettings) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_seconds,
    )

    @event.listens_for(engine, "connect")
    def _configure_connection(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy so that "begin" below decides how it starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL keeps an acknowledged commit across a power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY at once when
        # another writer holds the lock; IMMEDIATE takes the write lock up front and waits
        # for busy_timeout instead. Transactions on SQLite therefore run one at a time, and a
        # call fails with STORAGE_UNAVAILABLE only after waiting busy_timeout for the lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
