"""Service settings: each one has a command-line flag, an environment variable and a default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///var/tracking.sqlite3"


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings of one process. Flags win over environment variables, which win over defaults."""

    database_url: str = DEFAULT_DATABASE_URL
    grpc_listen: str = "127.0.0.1:50051"
    db_pool_size: int = 10
    db_max_overflow: int = 5
    worker_threads: int = 16
    write_batch_size: int = 256
    # 0 picks 1 writer on SQLite, which runs one write transaction at a time, and 2 on PostgreSQL.
    batch_writers: int = 0
    shutdown_grace_seconds: float = 10.0
    auth_cache_seconds: float = 60.0
    log_level: str = "INFO"
    log_format: str = "json"
    # Empty means the lists that ship with the service.
    network_data_dir: str = ""
    # Tracking links and the gateway. Secrets have no default; `make run` generates them.
    link_signing_keys: str = ""
    gateway_secret: str = ""
    tracking_base_url: str = ""
    gateway_listen: str = "127.0.0.1:8080"
    grpc_target: str = "127.0.0.1:50051"
    trusted_proxies: str = ""
    spool_path: str = "var/gateway-spool.sqlite3"
    spool_max_hits: int = 1_000_000
    max_body_bytes: int = 65_536
    trigger_retention_hours: float = 168.0
    trigger_pruning_interval_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class SettingSpec:
    name: str
    env: str
    convert: Callable[[str], Any]
    help: str
    choices: Sequence[str] | None = None


SETTING_SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "database_url",
        "TOPMAIL_DATABASE_URL",
        str,
        "SQLAlchemy database URL: sqlite:///PATH (embedded, a relative PATH is relative to the "
        "working directory) or postgresql://USER@HOST:PORT/DB (psycopg 3 is used)",
    ),
    SettingSpec(
        "grpc_listen", "TOPMAIL_GRPC_LISTEN", str, "HOST:PORT the gRPC server listens on; port 0 picks a free port"
    ),
    SettingSpec("db_pool_size", "TOPMAIL_DB_POOL_SIZE", int, "database connections kept open in the pool"),
    SettingSpec(
        "db_max_overflow", "TOPMAIL_DB_MAX_OVERFLOW", int, "extra connections opened beyond the pool size under load"
    ),
    SettingSpec("worker_threads", "TOPMAIL_WORKER_THREADS", int, "threads that run database work for gRPC calls"),
    SettingSpec(
        "write_batch_size",
        "TOPMAIL_WRITE_BATCH_SIZE",
        int,
        "most TrackProductView or RecordEmailEvent calls written in one transaction (group commit)",
    ),
    SettingSpec(
        "batch_writers",
        "TOPMAIL_BATCH_WRITERS",
        int,
        "batches of each kind written at the same time; 0 means 1 on SQLite and 2 on PostgreSQL",
    ),
    SettingSpec(
        "shutdown_grace_seconds",
        "TOPMAIL_SHUTDOWN_GRACE_SECONDS",
        float,
        "seconds that in-flight calls get to finish after SIGTERM or SIGINT",
    ),
    SettingSpec(
        "auth_cache_seconds",
        "TOPMAIL_AUTH_CACHE_SECONDS",
        float,
        "seconds a verified API key stays cached; a revoked key works at most this long",
    ),
    SettingSpec("log_level", "TOPMAIL_LOG_LEVEL", str.upper, "log level", ("DEBUG", "INFO", "WARNING", "ERROR")),
    SettingSpec("log_format", "TOPMAIL_LOG_FORMAT", str.lower, "log line format", ("json", "text")),
    SettingSpec(
        "network_data_dir",
        "TOPMAIL_NETWORK_DATA_DIR",
        str,
        "folder of the IP network lists used for bot classification; empty means the bundled lists",
    ),
    SettingSpec(
        "link_signing_keys",
        "TOPMAIL_LINK_SIGNING_KEYS",
        str,
        "HMAC keys of tracking links as KEY_ID:SECRET[,KEY_ID:SECRET...], the first one signing and all "
        "verifying; each SECRET is base64url of at least 32 random bytes",
    ),
    SettingSpec(
        "gateway_secret",
        "TOPMAIL_GATEWAY_SECRET",
        str,
        "shared secret with which the gateway authenticates RecordTrackingHits calls; at least 32 characters",
    ),
    SettingSpec(
        "tracking_base_url",
        "TOPMAIL_TRACKING_BASE_URL",
        str,
        "public base URL of the gateway that instrumented e-mails link to, such as https://t.example.com",
    ),
    SettingSpec("gateway_listen", "TOPMAIL_GATEWAY_LISTEN", str, "HOST:PORT the HTTP gateway listens on"),
    SettingSpec("grpc_target", "TOPMAIL_GRPC_TARGET", str, "HOST:PORT of the gRPC server the gateway records through"),
    SettingSpec(
        "trusted_proxies",
        "TOPMAIL_TRUSTED_PROXIES",
        str,
        "comma-separated IPs or CIDR networks of proxies whose X-Forwarded-For the gateway believes",
    ),
    SettingSpec(
        "spool_path",
        "TOPMAIL_SPOOL_PATH",
        str,
        "SQLite file where the gateway keeps hits it could not record yet; relative to the working directory",
    ),
    SettingSpec(
        "spool_max_hits",
        "TOPMAIL_SPOOL_MAX_HITS",
        int,
        "hits the spool keeps at most; newer hits beyond it are dropped and logged",
    ),
    SettingSpec(
        "max_body_bytes", "TOPMAIL_MAX_BODY_BYTES", int, "largest JSON request body the gateway accepts, in bytes"
    ),
    SettingSpec(
        "trigger_retention_hours",
        "TOPMAIL_TRIGGER_RETENTION_HOURS",
        float,
        "hours a flow trigger is kept at least; older ones go once every consumer group acknowledged them",
    ),
    SettingSpec(
        "trigger_pruning_interval_seconds",
        "TOPMAIL_TRIGGER_PRUNING_INTERVAL_SECONDS",
        float,
        "seconds between runs of the job that deletes old acknowledged flow triggers",
    ),
)

_DEFAULTS = Settings()


def add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Add `--flag` options for the named settings; their help shows the variable and default."""
    for spec in SETTING_SPECS:
        if spec.name not in names:
            continue
        default = getattr(_DEFAULTS, spec.name)
        parser.add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=spec.name,
            type=spec.convert,
            choices=spec.choices,
            default=None,
            help=f"{spec.help} (env {spec.env}, default {default})",
        )


def resolve_settings(arguments: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """Combine flags, environment variables and defaults; raise ValueError naming a bad variable."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    specs = {spec.name: spec for spec in SETTING_SPECS}
    for field in fields(Settings):
        spec = specs[field.name]
        from_flag = getattr(arguments, field.name, None)
        if from_flag is not None:
            values[field.name] = from_flag
            continue
        raw = environ.get(spec.env)
        if raw is None or raw == "":
            continue
        try:
            value = spec.convert(raw)
        except ValueError as error:
            raise ValueError(f"invalid {spec.env}={raw!r}: {error}") from None
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"invalid {spec.env}={raw!r}: expected one of {', '.join(spec.choices)}")
        values[field.name] = value
    return Settings(**values)
