"""SQL storage of the engagement counters that GetEngagementStats reads: updates, reads and rebuilds."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from sqlalchemy import Table, delete, func, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.adapters.database.schema import (
    EmailEventRow,
    counter_column_name,
    engagement_counters,
    message_event_tallies,
)
from server.domain.classification import BotType, EmailEventType
from server.domain.engagement import (
    EngagementCounterKey,
    ScopeKind,
    TallyKey,
    engagement_metric_names,
    tally_counter_deltas,
)

# Counter changes, and message tallies, that a rebuild collects in memory before it writes them.
REBUILD_PENDING_COUNTERS = 20_000
# Grouped rows that a rebuild fetches from the database at a time.
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


@dataclass(frozen=True, slots=True)
class MessageTally:
    """Counts of the stored events of one contact's message; see the message_event_tallies table."""

    tally: Counter[TallyKey]
    has_recorded_human_open: bool


def read_message_tallies(
    session: Session, workspace_id: uuid.UUID, keys: Sequence[tuple[str, uuid.UUID]]
) -> dict[tuple[str, uuid.UUID], MessageTally]:
    """Return the tallies of (message id, contact id) pairs of one workspace; a pair without events has none."""
    if not keys:
        return {}
    rows = session.connection().execute(
        select(
            message_event_tallies.c.message_id,
            message_event_tallies.c.contact_id,
            message_event_tallies.c.tally,
            message_event_tallies.c.has_recorded_human_open,
        ).where(
            message_event_tallies.c.workspace_id == workspace_id,
            tuple_(message_event_tallies.c.message_id, message_event_tallies.c.contact_id).in_(list(keys)),
        )
    )
    return {
        (row.message_id, row.contact_id): MessageTally(_tally_from_json(row.tally), row.has_recorded_human_open)
        for row in rows
    }


def write_message_tallies(session: Session, tallies: Mapping[tuple[uuid.UUID, str, uuid.UUID], MessageTally]) -> None:
    """Store the tallies of (workspace id, message id, contact id) pairs, replacing earlier ones.

    The caller holds the pairs' locks, so replacing a row cannot lose a concurrent change.
    """
    if not tallies:
        return
    rows = [
        {
            "workspace_id": workspace_id,
            "message_id": message_id,
            "contact_id": contact_id,
            "tally": _tally_to_json(tallies[(workspace_id, message_id, contact_id)].tally),
            "has_recorded_human_open": tallies[(workspace_id, message_id, contact_id)].has_recorded_human_open,
        }
        for workspace_id, message_id, contact_id in sorted(tallies)
    ]
    statement = _insert_for(session, message_event_tallies)
    session.connection().execute(
        statement.on_conflict_do_update(
            index_elements=[
                message_event_tallies.c.workspace_id,
                message_event_tallies.c.message_id,
                message_event_tallies.c.contact_id,
            ],
            set_={
                "tally": statement.excluded.tally,
                "has_recorded_human_open": statement.excluded.has_recorded_human_open,
            },
        ),
        rows,
    )


def rebuild_engagement_counters(session: Session, *, pending_counters: int = REBUILD_PENDING_COUNTERS) -> int:
    """Replace every engagement counter and message tally with counts from email_events; return the counter rows.

    The database counts the events per contact's message, and the counts stream in pair
    order. Counter changes are written whenever `pending_counters` of them have piled up, so
    memory stays bounded whatever the table size. On PostgreSQL the counters and tallies stay
    locked against writes until the transaction ends: transactions that record events wait
    rather than change what is being replaced, and readers see the old counters until commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Counters first: recording transactions update counters before tallies, so this order
        # cannot deadlock with them.
        session.execute(text("LOCK TABLE engagement_counters IN EXCLUSIVE MODE"))
        session.execute(text("LOCK TABLE message_event_tallies IN EXCLUSIVE MODE"))
    session.execute(delete(engagement_counters))
    session.execute(delete(message_event_tallies))

    pending: Counter[EngagementCounterKey] = Counter()
    pending_tallies: dict[tuple[uuid.UUID, str, uuid.UUID], MessageTally] = {}
    for pair, tally in _tallies_by_pair(session):
        workspace_id, message_id, _contact_id = pair
        pending.update(tally_counter_deltas(workspace_id, message_id, {}, tally.tally))
        pending_tallies[pair] = tally
        if len(pending) >= pending_counters or len(pending_tallies) >= pending_counters:
            add_to_engagement_counters(session, pending)
            write_message_tallies(session, pending_tallies)
            pending.clear()
            pending_tallies.clear()
    add_to_engagement_counters(session, pending)
    write_message_tallies(session, pending_tallies)

    return int(session.scalar(select(func.count()).select_from(engagement_counters)) or 0)


def _tallies_by_pair(session: Session) -> Iterator[tuple[tuple[uuid.UUID, str, uuid.UUID], MessageTally]]:
    """Yield the tally of every (workspace, message, contact) pair that has events, counted by the database."""
    pair_columns = (EmailEventRow.workspace_id, EmailEventRow.message_id, EmailEventRow.contact_id)
    counted_columns = (
        EmailEventRow.event_type,
        EmailEventRow.is_bot,
        EmailEventRow.bot_type,
        EmailEventRow.campaign_id,
        EmailEventRow.inferred,
    )
    statement = (
        select(*pair_columns, *counted_columns, func.count())
        .group_by(*pair_columns, *counted_columns)
        .order_by(*pair_columns)
    )
    # yield_per streams the rows: a server-side cursor on PostgreSQL, batches of fetchmany on SQLite.
    rows = session.execute(statement, execution_options={"yield_per": REBUILD_FETCH_ROWS})
    for pair, pair_rows in groupby(rows, key=lambda row: (row[0], row[1], row[2])):
        tally: Counter[TallyKey] = Counter()
        has_recorded_human_open = False
        for row in pair_rows:
            counted: tuple[Any, ...] = tuple(row)[3:]
            event_type_name, is_bot, bot_type, campaign_id, inferred, count = counted
            event_type = EmailEventType(event_type_name)
            tally[TallyKey(event_type, is_bot, BotType(bot_type) if bot_type else None, campaign_id)] += int(count)
            if event_type is EmailEventType.OPENED and not is_bot and not inferred:
                has_recorded_human_open = True
        yield pair, MessageTally(tally, has_recorded_human_open)


def _tally_to_json(tally: Mapping[TallyKey, int]) -> list[list[Any]]:
    entries = [
        [key.event_type.value, key.is_bot, key.bot_type.value if key.bot_type else None, key.campaign_id, count]
        for key, count in tally.items()
        if count > 0
    ]
    # A fixed order keeps equal tallies byte-for-byte equal.
    return sorted(entries, key=lambda entry: [str(value) for value in entry])


def _tally_from_json(entries: list[list[Any]]) -> Counter[TallyKey]:
    tally: Counter[TallyKey] = Counter()
    for event_type, is_bot, bot_type, campaign_id, count in entries:
        tally[
            TallyKey(EmailEventType(event_type), bool(is_bot), BotType(bot_type) if bot_type else None, campaign_id)
        ] = int(count)
    return tally


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


def _insert_for(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    dialect_name = session.get_bind().dialect.name
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"engagement counters support PostgreSQL and SQLite, not {dialect_name!r}")


def _upsert_statement(session: Session) -> postgresql.Insert | sqlite.Insert:
    """Return INSERT ... ON CONFLICT DO UPDATE that adds the inserted values to an existing scope row."""
    statement = _insert_for(session, engagement_counters)
    return statement.on_conflict_do_update(
        index_elements=[
            engagement_counters.c.workspace_id,
            engagement_counters.c.scope_kind,
            engagement_counters.c.scope_id,
        ],
        set_={name: engagement_counters.c[name] + statement.excluded[name] for name in _COLUMN_NAMES},
    )
