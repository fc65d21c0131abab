"""The throwaway PostgreSQL database of a bench run, and bulk loading of stored events into it.

Bulk loads write straight into the tables with one INSERT ... SELECT over generate_series each,
which PostgreSQL runs without a round trip per row. They exist only to give the measured RPCs
a realistically large table; the measured writes always go through the gRPC API.
"""

from __future__ import annotations

import logging
import re
import secrets

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

DATABASE_NAME_PATTERN = re.compile(r"bench_[a-z0-9_]+")


def new_database_name() -> str:
    return f"bench_tracking_{secrets.token_hex(4)}"


def database_url(admin_url: str, name: str) -> str:
    """Return `admin_url` with its database replaced by `name`."""
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def create_database(admin_url: str, name: str) -> None:
    _check_name(name)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    logger.info("created database %s", name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop the database, ending connections that are still open to it (PostgreSQL 13 or newer)."""
    _check_name(name)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    logger.info("dropped database %s", name)


def _check_name(name: str) -> None:
    # The bench creates and drops only databases of its own, recognisable by the prefix.
    if not DATABASE_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"invalid bench database name {name!r}: expected bench_ followed by [a-z0-9_]")


def server_version(url: str) -> str:
    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def autovacuum_enabled(url: str) -> bool:
    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW autovacuum").fetchone()
    return row is not None and row[0] == "on"


def vacuum_analyze(url: str) -> None:
    """Vacuum and analyze the bench database, as autovacuum would with PostgreSQL's default settings."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def count_recorded_hits(url: str, campaign_id: str, event_type: str) -> int:
    """Count events of the campaign and type that were recorded from a request, not inferred."""
    query = "SELECT count(*) FROM email_events WHERE campaign_id = %s AND event_type = %s AND NOT inferred"
    with psycopg.connect(url) as connection:
        row = connection.execute(query, (campaign_id, event_type)).fetchone()
    return int(row[0]) if row else 0


# Each message gets, in this order: one delivery, two opens and one click, all within the past week.
# About 30 % of opens are Apple Mail Privacy Protection fetches, about 5 % scanner opens, and about
# 15 % of clicks come from bots, so the statistics query has every kind of row to count.
# The columns are those of EmailEventRow in server/adapters/database/schema.py.
_CAMPAIGN_EVENTS_SQL = """
INSERT INTO email_events (
    id, workspace_id, contact_id, message_id, campaign_id, event_type, occurred_at, recorded_at,
    client_ip, user_agent, http_method, request_headers, link_url, link_id, honeypot_link, delivered_at,
    is_bot, bot_type, bot_confidence, bot_signals, classifier_version, inferred, inferred_from_event_id,
    idempotency_key, request_fingerprint
)
SELECT
    gen_random_uuid(),
    %(workspace_id)s,
    md5(%(campaign_id)s || '-contact-' || message)::uuid,
    %(campaign_id)s || '-' || message,
    %(campaign_id)s,
    CASE step WHEN 0 THEN 'delivered' WHEN 3 THEN 'clicked' ELSE 'opened' END,
    now() - interval '7 days' + make_interval(secs => mod(message, 600000) + step * 3600),
    now(),
    CASE WHEN step = 0 THEN NULL ELSE '86.' || mod(message, 250) || '.' || mod(message / 250, 250) || '.' || step END,
    CASE WHEN step = 0 THEN '' ELSE 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15' END,
    CASE WHEN step = 0 THEN NULL ELSE 'GET' END,
    '{}'::json,
    CASE WHEN step = 3 THEN 'https://shop.example.com/products/' || mod(message, 500) END,
    CASE WHEN step = 3 THEN '1-5f2a9c01' END,
    false,
    NULL,
    bot_type IS NOT NULL,
    bot_type,
    CASE bot_type WHEN 'security_scanner' THEN 'high' WHEN 'apple_mpp' THEN 'high' WHEN 'user_agent' THEN 'medium' END,
    CASE WHEN bot_type IS NULL THEN '[]' ELSE json_build_array(bot_type) END::json,
    'bench-load',
    false,
    NULL,
    NULL,
    md5(message::text || '-' || step)
FROM generate_series(0, %(message_count)s::bigint * 4 - 1) AS numbered (n),
    LATERAL (SELECT n / 4 AS message, mod(n, 4) AS step, mod(n * 7919, 100) AS draw) AS shaped,
    LATERAL (
        SELECT CASE
            WHEN step IN (1, 2) AND draw < 30 THEN 'apple_mpp'
            WHEN step IN (1, 2) AND draw < 35 THEN 'security_scanner'
            WHEN step = 3 AND draw < 15 THEN 'user_agent'
        END AS bot_type
    ) AS verdict
"""

_CAMPAIGN_CONTACTS_SQL = """
INSERT INTO contacts (id, workspace_id, email, email_lookup_key, created_at)
SELECT
    md5(%(campaign_id)s || '-contact-' || message)::uuid,
    %(workspace_id)s,
    %(campaign_id)s || '-recipient-' || message || '@bench.example.com',
    %(campaign_id)s || '-recipient-' || message || '@bench.example.com',
    now()
FROM generate_series(0, %(message_count)s - 1) AS numbered (message)
"""


def load_campaign(url: str, workspace_id: str, campaign_id: str, event_count: int) -> None:
    """Store a campaign of `event_count` events (a multiple of 4), one recipient per message, then ANALYZE.

    The recipients are new contacts, so the load needs no contacts of the caller.
    """
    if event_count % 4:
        raise ValueError(f"event_count must be a multiple of 4, got {event_count}")
    parameters = {"workspace_id": workspace_id, "campaign_id": campaign_id, "message_count": event_count // 4}
    with psycopg.connect(url) as connection:
        connection.execute(_CAMPAIGN_CONTACTS_SQL, parameters)
        connection.execute(_CAMPAIGN_EVENTS_SQL, parameters)
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        # The statistics query is planned from table statistics; autovacuum would gather them later.
        connection.execute("ANALYZE contacts")
        connection.execute("ANALYZE email_events")
