"""A durable local spool of tracking hits that the gateway could not record yet, in SQLite."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled_hits (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    hit_key TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


class SqliteSpool:
    """Hits kept in arrival order in a SQLite file, at most `max_hits` of them.

    Every write commits with synchronous=FULL, so a spooled hit survives a crash or power loss.
    Methods are blocking and thread-safe; the gateway calls them from worker threads.
    """

    def __init__(self, path: Path, max_hits: int) -> None:
        if max_hits < 1:
            raise ValueError(f"the spool must hold at least 1 hit, got {max_hits}")
        self.path = path
        self.max_hits = max_hits
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"cannot open the spool {path} (--spool-path): {error}") from error

    def add(self, hits: list[tuple[str, bytes]]) -> list[str]:
        """Store hits by key and return the keys that did not fit; a key already stored is kept once."""
        with self._lock:
            free = self.max_hits - self._count()
            accepted, rejected = hits[: max(free, 0)], hits[max(free, 0) :]
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.executemany(
                    "INSERT OR IGNORE INTO spooled_hits (hit_key, payload) VALUES (?, ?)", accepted
                )
                self._connection.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return [key for key, _ in rejected]

    def oldest(self, limit: int) -> list[tuple[str, bytes, int]]:
        """Return up to `limit` hits in arrival order with their failed attempts, leaving them in the spool."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT hit_key, payload, attempts FROM spooled_hits ORDER BY position LIMIT ?", (limit,)
            ).fetchall()
        return [(str(key), bytes(payload), int(attempts)) for key, payload, attempts in rows]

    def remove(self, keys: list[str]) -> None:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.executemany("DELETE FROM spooled_hits WHERE hit_key = ?", [(key,) for key in keys])
                self._connection.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def count_attempt(self, keys: list[str]) -> None:
        """Count one more failed attempt of each hit, in one transaction."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.executemany(
                    "UPDATE spooled_hits SET attempts = attempts + 1 WHERE hit_key = ?", [(key,) for key in keys]
                )
                self._connection.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # A failed BEGIN leaves no transaction open, and ROLLBACK would hide the real error.
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        row = self._connection.execute("SELECT count(*) FROM spooled_hits").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()
