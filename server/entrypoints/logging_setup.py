"""Logging configuration for the command-line entrypoints: one JSON object per line by default."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str, log_format: str) -> None:
    """Send every log record to stderr, as JSON lines or as plain text with key=value extras."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                # An ISO 8601 UTC time under the key "time".
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(_KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic reports its dialect at INFO on every schema check; the migrate command turns it back on.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _KeyValueFormatter(logging.Formatter):
    """Appends the record's `extra` fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES}
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return line
