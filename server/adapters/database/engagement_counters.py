"""SQL storage of the engagement counters that GetEngagementStats reads: updates, reads and rebuilds."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import groupby
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.adapters.database.schema import EmailEventRow, counter_column_name, engagement_counters
from server.domain.classification import BotType, EmailEventType
from server.domain.engagement import (
    CountedEvent,
    EngagementCounterKey,
    ScopeKind,
    counted_event_deltas,
    engagement_metric_names,
)

# Counter changes that a rebuild collects in memory before it writes them.
REBUILD_PENDING_COUNTERS = 20_000
# Rows of email_events that a rebuild fetches from the database at a time.
REBUILD_FETCH_ROWS = 10_000


def add_to_engagement_counters(session: Session, deltas: Mapping[EngagementCounterKey, int]) -> None:
    """Add each non-zero delta to its counter, and create the scope rows that do not exist yet.

    Writes one row per scope, in scope order. Transactions that each make one call therefore
    lock the scope rows they share in the same order and cannot deadlock on them.
    """
    rows = _scope_rows(deltas)
    if not rows:
        return
    # A list of parameter sets runs as the driver's executemany: one statement per row, in list
    # order. The Core connection skips the ORM's bookkeeping, which this does not need.
    session.connection().execute(_upsert_statement(session), rows)


def read_engagement_counters(
    session: Session, workspace_id: uuid.UUID, scope_kind: ScopeKind, scope_id: str
) -> dict[str, int]:
    """Return the counters of one message or campaign by metric name; a scope without events has none."""
    row = session.execute(
        select(*_METRIC_COLUMNS.values()).where(
            engagement_counters.c.workspace_id == workspace_id,
            engagement_counters.c.scope_kind == scope_kind.value,
            engagement_counters.c.scope_id == scope_id,
        )
    ).one_or_none()
    if row is None:
        return {}
    return {metric: int(value) for metric, value in zip(_METRIC_COLUMNS, row, strict=True) if value}


def rebuild_engagement_counters(
    session: Session, *, pending_counters: int = REBUILD_PENDING_COUNTERS, fetch_rows: int = REBUILD_FETCH_ROWS
) -> int:
    """Replace every engagement counter with counts recomputed from email_events; return the counter rows written.

    Reads the events in (workspace, message, contact) order, `fetch_rows` at a time, and
    writes the counter changes whenever `pending_counters` of them have piled up, so memory
    stays bounded whatever the table size. On PostgreSQL the counters stay locked against
    writes until the transaction ends: transactions that record events wait rather than
    change counters that are being replaced, and readers see the old counters until commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE engagement_counters IN EXCLUSIVE MODE"))
    session.execute(delete(engagement_counters))

    pending: Counter[EngagementCounterKey] = Counter()
    for _pair, events in groupby(_counted_events_by_pair(session, fetch_rows), key=_pair_of):
        pending.update(counted_event_deltas([], list(events)))
        if len(pending) >= pending_counters:
            add_to_engagement_counters(session, pending)
            pending.clear()
    add_to_engagement_counters(session, pending)

    return int(session.scalar(select(func.count()).select_from(engagement_counters)) or 0)


def _counted_events_by_pair(session: Session, fetch_rows: int) -> Iterator[CountedEvent]:
    """Yield every stored event, those of one (workspace, message, contact) pair one after another."""
    statement = select(
        EmailEventRow.workspace_id,
        EmailEventRow.contact_id,
        EmailEventRow.message_id,
        EmailEventRow.campaign_id,
        EmailEventRow.event_type,
        EmailEventRow.is_bot,
        EmailEventRow.bot_type,
    ).order_by(EmailEventRow.workspace_id, EmailEventRow.message_id, EmailEventRow.contact_id)
    # yield_per streams the rows: a server-side cursor on PostgreSQL, batches of fetchmany on SQLite.
    rows = session.execute(statement, execution_options={"yield_per": fetch_rows})
    for row in rows:
        yield CountedEvent(
            workspace_id=row.workspace_id,
            contact_id=row.contact_id,
            message_id=row.message_id,
            campaign_id=row.campaign_id,
            event_type=EmailEventType(row.event_type),
            is_bot=row.is_bot,
            bot_type=BotType(row.bot_type) if row.bot_type else None,
        )


def _pair_of(event: CountedEvent) -> tuple[uuid.UUID, str, uuid.UUID]:
    return event.workspace_id, event.message_id, event.contact_id


_METRIC_COLUMNS = {metric: engagement_counters.c[counter_column_name(metric)] for metric in engagement_metric_names()}


def _scope_rows(deltas: Mapping[EngagementCounterKey, int]) -> list[dict[str, Any]]:
    """Group the deltas into one row per scope, with every metric column, in scope order."""
    by_scope: dict[tuple[uuid.UUID, str, str], dict[str, Any]] = {}
    for key, delta in deltas.items():
        if delta == 0:
            continue
        scope = (key.workspace_id, key.scope_kind.value, key.scope_id)
        row = by_scope.get(scope)
        if row is None:
            row = {"workspace_id": key.workspace_id, "scope_kind": scope[1], "scope_id": key.scope_id}
            row.update(dict.fromkeys(_COLUMN_NAMES, 0))
            by_scope[scope] = row
        row[counter_column_name(key.metric)] += delta
    return [by_scope[scope] for scope in sorted(by_scope)]


_COLUMN_NAMES = tuple(column.name for column in _METRIC_COLUMNS.values())


def _upsert_statement(session: Session) -> postgresql.Insert | sqlite.Insert:
    """Return INSERT ... ON CONFLICT DO UPDATE that adds the inserted values to an existing scope row."""
    dialect_name = session.get_bind().dialect.name
    statement: postgresql.Insert | sqlite.Insert
    if dialect_name == "postgresql":
        statement = postgresql.insert(engagement_counters)
    elif dialect_name == "sqlite":
        statement = sqlite.insert(engagement_counters)
    else:
        raise ValueError(f"engagement counters support PostgreSQL and SQLite, not {dialect_name!r}")
    return statement.on_conflict_do_update(
        index_elements=[
            engagement_counters.c.workspace_id,
            engagement_counters.c.scope_kind,
            engagement_counters.c.scope_id,
        ],
        set_={name: engagement_counters.c[name] + statement.excluded[name] for name in _COLUMN_NAMES},
    )
