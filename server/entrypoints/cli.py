"""The `topmail-tracking` command: serve, migrate, rebuild counters, and manage workspaces and API keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from server.adapters.database.engagement_counters import rebuild_engagement_counters
from server.adapters.database.engine import create_database_engine
from server.adapters.database.migrations import SchemaOutdated, ensure_schema_current, upgrade_to_latest
from server.adapters.database.repository import SqlStore
from server.adapters.network_data import NetworkDataError, load_network_directory
from server.adapters.network_data.refresh import main as refresh_network_data
from server.domain.api_keys import ApiKeyMode
from server.domain.errors import TrackingError
from server.entrypoints.gateway.serve import serve_gateway
from server.entrypoints.grpc_api.app import serve_until_signalled, utc_now
from server.entrypoints.link_settings import generate_signing_key
from server.entrypoints.logging_setup import configure_logging
from server.entrypoints.settings import SETTING_SPECS, Settings, add_setting_flags, resolve_settings
from server.usecases.workspaces import IssuedApiKey, WorkspaceAdmin

logger = logging.getLogger(__name__)

DEV_WORKSPACE_NAME = "development"
_DATABASE_SETTINGS = ("database_url", "log_level", "log_format")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topmail-tracking", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the gRPC API until SIGTERM or SIGINT")
    add_setting_flags(serve, [spec.name for spec in SETTING_SPECS])

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    add_setting_flags(migrate, _DATABASE_SETTINGS)

    rebuild = commands.add_parser(
        "rebuild-engagement-counters",
        help="recompute the engagement counters that GetEngagementStats reads, and the per-message event "
        "counts, from the stored e-mail events in one transaction; on PostgreSQL, recording events waits "
        "until it commits",
    )
    add_setting_flags(rebuild, _DATABASE_SETTINGS)

    create = commands.add_parser("create-workspace", help="create a workspace and print its first API key once")
    create.add_argument("name", help="unique workspace name, 1 to 100 characters")
    create.add_argument(
        "--mode", choices=[mode.value for mode in ApiKeyMode], default="live", help="key kind (default live)"
    )
    add_setting_flags(create, _DATABASE_SETTINGS)

    issue = commands.add_parser("create-api-key", help="add an API key to an existing workspace and print it once")
    issue.add_argument("workspace", help="workspace name")
    issue.add_argument(
        "--mode", choices=[mode.value for mode in ApiKeyMode], default="live", help="key kind (default live)"
    )
    add_setting_flags(issue, _DATABASE_SETTINGS)

    network_data = commands.add_parser(
        "network-data", help="list the IP network lists used for bot classification, with their age"
    )
    add_setting_flags(network_data, ("network_data_dir", "log_level", "log_format"))

    commands.add_parser(
        "refresh-network-data",
        help="download the vendors' network lists again; options: refresh-network-data --help",
        add_help=False,
    )

    gateway = commands.add_parser("gateway", help="serve the HTTP tracking gateway until SIGTERM or SIGINT")
    add_setting_flags(gateway, [spec.name for spec in SETTING_SPECS])

    secrets_command = commands.add_parser(
        "dev-secrets",
        help="print TOPMAIL_LINK_SIGNING_KEYS, TOPMAIL_GATEWAY_SECRET and TOPMAIL_TRACKING_BASE_URL lines "
        "with new random secrets, for a development environment file",
    )
    secrets_command.add_argument(
        "--tracking-base-url", default="http://127.0.0.1:8080", help="gateway base URL to print"
    )

    dev = commands.add_parser(
        "ensure-dev-workspace",
        help=f"create the {DEV_WORKSPACE_NAME!r} workspace with a test key unless it exists",
    )
    add_setting_flags(dev, _DATABASE_SETTINGS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["refresh-network-data"]:
        # The refresh has its own options (--data-dir, --only, --source-url, --timeout).
        return refresh_network_data(argv[1:])
    arguments = build_parser().parse_args(argv)
    try:
        settings = resolve_settings(arguments)
    except ValueError as error:
        print(f"topmail-tracking: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)

    try:
        if arguments.command == "serve":
            asyncio.run(serve_until_signalled(settings))
            return 0
        if arguments.command == "migrate":
            return _migrate(settings)
        if arguments.command == "rebuild-engagement-counters":
            return _rebuild_engagement_counters(settings)
        if arguments.command == "network-data":
            return _print_network_data(settings)
        if arguments.command == "gateway":
            serve_gateway(settings)
            return 0
        if arguments.command == "dev-secrets":
            print(f"TOPMAIL_LINK_SIGNING_KEYS={generate_signing_key('dev-1')}")
            print(f"TOPMAIL_GATEWAY_SECRET={secrets.token_urlsafe(32)}")
            print(f"TOPMAIL_TRACKING_BASE_URL={arguments.tracking_base_url}")
            return 0
        return _manage_workspaces(arguments, settings)
    except SchemaOutdated as error:
        logger.error("refusing to start: %s", error)
        return 3
    except (OSError, ValueError, SQLAlchemyError, NetworkDataError) as error:
        # Startup failures such as an unreachable database or a bad URL, reported in one line.
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        logger.error("%s failed: %s: %s", arguments.command, type(error).__name__, detail)
        return 1


def _print_network_data(settings: Settings) -> int:
    data_dir = Path(settings.network_data_dir) if settings.network_data_dir else None
    try:
        directory = load_network_directory(data_dir)
    except NetworkDataError as error:
        print(f"topmail-tracking: {error}", file=sys.stderr)
        return 1
    today = utc_now().date()
    print(f"{'source':<24} {'category':<20} {'provider':<14} {'prefixes':>9} {'retrieved':<10} {'age (days)':>10}")
    for source in directory.sources:
        print(
            f"{source.name:<24} {source.category.value:<20} {source.provider:<14} {source.prefix_count:>9} "
            f"{source.retrieved_on.isoformat():<10} {(today - source.retrieved_on).days:>10}"
        )
    return 0


def _migrate(settings: Settings) -> int:
    logging.getLogger("alembic").setLevel(settings.log_level)
    engine = create_database_engine(settings.database_url)
    try:
        revision = upgrade_to_latest(engine)
    finally:
        engine.dispose()
    logger.info("database schema is current", extra={"revision": ",".join(revision)})
    return 0


def _rebuild_engagement_counters(settings: Settings) -> int:
    engine = create_database_engine(settings.database_url)
    try:
        ensure_schema_current(engine)
        started = time.monotonic()
        with Session(engine) as session, session.begin():
            counter_rows = rebuild_engagement_counters(session)
    finally:
        engine.dispose()
    duration_seconds = round(time.monotonic() - started, 3)
    logger.info(
        "rebuilt engagement counters: wrote %d counter rows in %.1f s",
        counter_rows,
        duration_seconds,
        extra={"counter_rows": counter_rows, "duration_seconds": duration_seconds},
    )
    return 0


def _manage_workspaces(arguments: argparse.Namespace, settings: Settings) -> int:
    engine = create_database_engine(settings.database_url)
    try:
        ensure_schema_current(engine)
        admin = WorkspaceAdmin(SqlStore(engine), utc_now)
        if arguments.command == "create-workspace":
            if admin.find_workspace(arguments.name) is not None:
                print(f"workspace {arguments.name!r} already exists; use create-api-key to add a key", file=sys.stderr)
                return 1
            _print_key(admin.create_workspace(arguments.name, ApiKeyMode(arguments.mode)))
        elif arguments.command == "create-api-key":
            issued = admin.issue_api_key(arguments.workspace, ApiKeyMode(arguments.mode))
            if issued is None:
                print(f"no workspace named {arguments.workspace!r}", file=sys.stderr)
                return 1
            _print_key(issued)
        else:
            if admin.find_workspace(DEV_WORKSPACE_NAME) is not None:
                print(
                    f"workspace {DEV_WORKSPACE_NAME!r} exists; its key was printed when it was created. "
                    f"Get another with: {shlex.quote(sys.argv[0])} create-api-key {DEV_WORKSPACE_NAME} --mode test"
                )
                return 0
            _print_key(admin.create_workspace(DEV_WORKSPACE_NAME, ApiKeyMode.TEST))
    except TrackingError as error:
        print(f"topmail-tracking: {error.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _print_key(issued: IssuedApiKey) -> None:
    print(f"workspace: {issued.workspace.name} ({issued.workspace.id})")
    print(f"API key (shown only now, store it safely): {issued.api_key}")


if __name__ == "__main__":
    sys.exit(main())
