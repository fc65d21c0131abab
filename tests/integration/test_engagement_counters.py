"""Engagement counters on real SQLite and PostgreSQL: upserts, rebuilds, the migration backfill and the read path.

Each test gets a database of its own, because a rebuild recomputes the counters of every workspace.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, func, insert, inspect, select, update
from sqlalchemy.orm import Session

from server.adapters.database.email_event_store import SqlEmailEventStore, email_event_row_values
from server.adapters.database.engagement_counters import (
    add_to_engagement_counters,
    read_engagement_counters,
    rebuild_engagement_counters,
)
from server.adapters.database.engine import create_database_engine
from server.adapters.database.migrations import MIGRATIONS_DIR, current_revisions, upgrade_to_latest
from server.adapters.database.repository import SqlStore
from server.adapters.database.schema import (
    ContactRow,
    EmailEventRow,
    WorkspaceRow,
    engagement_counters,
    message_event_tallies,
)
from server.domain.classification import BotType, EmailEventType
from server.domain.email_events import EmailEvent
from server.domain.engagement import (
    EngagementCounterKey,
    EngagementScope,
    ScopeKind,
    engagement_counter_deltas,
)
from tests.engagement_support import HUMAN, bot_verdict, email_event, expected_engagement_counts

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
MESSAGES = ["m1", "m2", "m3"]
CAMPAIGNS = ["spring", "summer"]
VERDICTS = [
    HUMAN,
    HUMAN,
    bot_verdict(BotType.APPLE_MPP),
    bot_verdict(BotType.SECURITY_SCANNER),
    bot_verdict(BotType.PREFETCH),
]


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    """An engine on a new, fully migrated database."""
    engine = create_database_engine(empty_database_url)
    upgrade_to_latest(engine)
    yield engine
    engine.dispose()


def migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def add_workspace_and_contacts(engine: Engine, contact_count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Insert a workspace and its contacts with explicit columns, which every revision since 0002 has."""
    workspace_id = uuid.uuid4()
    contact_ids = [uuid.uuid4() for _ in range(contact_count)]
    with engine.begin() as connection:
        connection.execute(
            insert(WorkspaceRow).values(id=workspace_id, name=f"ws-{workspace_id.hex[:12]}", created_at=NOW)
        )
        for index, contact_id in enumerate(contact_ids):
            address = f"contact{index}@example.com"
            connection.execute(
                insert(ContactRow).values(
                    id=contact_id, workspace_id=workspace_id, email=address, email_lookup_key=address, created_at=NOW
                )
            )
    return workspace_id, contact_ids


def random_events(
    rng: random.Random, workspace_id: uuid.UUID, contact_ids: Sequence[uuid.UUID], count: int
) -> list[EmailEvent]:
    """Return events spread over a few messages, with campaign ids missing, single or mixed within a pair."""
    events = []
    for _ in range(count):
        event_type = rng.choice(list(EmailEventType))
        events.append(
            email_event(
                workspace_id,
                rng.choice(contact_ids),
                rng.choice(MESSAGES),
                event_type,
                campaign_id=rng.choice([None, None, *CAMPAIGNS]),
                verdict=rng.choice(VERDICTS),
            )
        )
    return events


def row_values(event: EmailEvent) -> dict[str, Any]:
    return email_event_row_values(event)


def insert_events(engine: Engine, events: Sequence[EmailEvent]) -> None:
    with engine.begin() as connection:
        connection.execute(insert(EmailEventRow), [row_values(event) for event in events])


def rebuild(engine: Engine, **limits: int) -> int:
    with Session(engine) as session, session.begin():
        return rebuild_engagement_counters(session, **limits)


def counter_row_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(engagement_counters)) or 0)


def assert_counts_match_events(engine: Engine, events: Sequence[EmailEvent], workspace_id: uuid.UUID) -> None:
    store = SqlEmailEventStore(SqlStore(engine))
    for message_id in [*MESSAGES, "never-sent"]:
        counts = store.count_engagement(workspace_id, EngagementScope(message_id=message_id, campaign_id=None))
        assert counts == expected_engagement_counts(events, workspace_id, message_id=message_id), message_id
    for campaign_id in [*CAMPAIGNS, "never-sent"]:
        counts = store.count_engagement(workspace_id, EngagementScope(message_id=None, campaign_id=campaign_id))
        assert counts == expected_engagement_counts(events, workspace_id, campaign_id=campaign_id), campaign_id


def test_upsert_creates_and_adds(engine: Engine) -> None:
    workspace_id, _ = add_workspace_and_contacts(engine, 0)
    opens = EngagementCounterKey(workspace_id, ScopeKind.MESSAGE, "m1", "opened.events")
    clicks = EngagementCounterKey(workspace_id, ScopeKind.MESSAGE, "m1", "clicked.events")
    campaign_opens = EngagementCounterKey(workspace_id, ScopeKind.CAMPAIGN, "m1", "opened.events")

    with Session(engine) as session, session.begin():
        add_to_engagement_counters(session, {opens: 2, clicks: 0, campaign_opens: 5})
    with Session(engine) as session, session.begin():
        add_to_engagement_counters(session, {opens: 3, clicks: -1})
    with Session(engine) as session:
        message = read_engagement_counters(session, workspace_id, ScopeKind.MESSAGE, "m1")
        campaign = read_engagement_counters(session, workspace_id, ScopeKind.CAMPAIGN, "m1")
        missing = read_engagement_counters(session, workspace_id, ScopeKind.MESSAGE, "m2")

    assert message == {"opened.events": 5, "clicked.events": -1}
    assert campaign == {"opened.events": 5}
    assert missing == {}
    # One row per scope: the message m1 and the campaign m1.
    assert counter_row_count(engine) == 2


def test_concurrent_upserts_add_up(engine: Engine) -> None:
    # Each transaction hands over the same counters in its own random order. Unless the rows
    # are written in key order, PostgreSQL aborts some of them as deadlocked.
    workspace_id, _ = add_workspace_and_contacts(engine, 0)
    keys = [EngagementCounterKey(workspace_id, ScopeKind.MESSAGE, f"m{index}", "opened.events") for index in range(30)]
    add_deltas(engine, dict.fromkeys(keys, 1))
    transactions_per_thread = 40

    def add_in_random_orders(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(transactions_per_thread):
            add_deltas(engine, dict.fromkeys(rng.sample(keys, len(keys)), 1))

    with ThreadPoolExecutor(max_workers=4) as pool:
        for finished in [pool.submit(add_in_random_orders, seed) for seed in range(4)]:
            finished.result(timeout=120)

    with Session(engine) as session:
        counters = {
            key.scope_id: read_engagement_counters(session, workspace_id, ScopeKind.MESSAGE, key.scope_id)
            for key in keys
        }
    assert counters == {key.scope_id: {"opened.events": 1 + 4 * transactions_per_thread} for key in keys}


def test_rebuild_matches_counts_from_events(engine: Engine) -> None:
    rng = random.Random(20261204)
    workspace_id, contact_ids = add_workspace_and_contacts(engine, 6)
    other_workspace_id, other_contact_ids = add_workspace_and_contacts(engine, 2)
    events = random_events(rng, workspace_id, contact_ids, 300)
    other_events = random_events(rng, other_workspace_id, other_contact_ids, 40)
    insert_events(engine, [*events, *other_events])

    written = rebuild(engine)

    assert written == counter_row_count(engine)
    assert written > 0
    assert_counts_match_events(engine, events, workspace_id)
    assert_counts_match_events(engine, other_events, other_workspace_id)


def test_rebuild_in_small_batches(engine: Engine) -> None:
    rng = random.Random(7)
    workspace_id, contact_ids = add_workspace_and_contacts(engine, 5)
    events = random_events(rng, workspace_id, contact_ids, 200)
    insert_events(engine, events)
    in_one_batch = rebuild(engine)

    # Counters of one scope are then written by several batches, and pairs span fetches.
    in_small_batches = rebuild(engine, pending_counters=7)

    assert in_small_batches == in_one_batch
    assert_counts_match_events(engine, events, workspace_id)


def test_rebuild_replaces_wrong_counters(engine: Engine) -> None:
    workspace_id, contact_ids = add_workspace_and_contacts(engine, 1)
    events = [email_event(workspace_id, contact_ids[0], "m1", EmailEventType.DELIVERED, campaign_id="spring")]
    insert_events(engine, events)
    with Session(engine) as session, session.begin():
        add_to_engagement_counters(
            session,
            {
                EngagementCounterKey(workspace_id, ScopeKind.MESSAGE, "m1", "delivered.events"): 40,
                EngagementCounterKey(workspace_id, ScopeKind.CAMPAIGN, "stale", "opened.events"): 3,
            },
        )

    written = rebuild(engine)

    # One row for the message and one for the campaign; the stale scope's row is gone.
    assert written == 2
    assert_counts_match_events(engine, events, workspace_id)
    with Session(engine) as session:
        assert read_engagement_counters(session, workspace_id, ScopeKind.CAMPAIGN, "stale") == {}


def test_rebuild_of_no_events_empties_counters(engine: Engine) -> None:
    workspace_id, _ = add_workspace_and_contacts(engine, 0)
    with Session(engine) as session, session.begin():
        add_to_engagement_counters(
            session, {EngagementCounterKey(workspace_id, ScopeKind.MESSAGE, "m1", "opened.events"): 1}
        )

    assert rebuild(engine) == 0
    assert counter_row_count(engine) == 0


def test_added_deltas_match_counts_from_events(engine: Engine) -> None:
    # The write path adds the deltas of each change of a pair: here new events, then bot verdicts.
    rng = random.Random(99)
    workspace_id, contact_ids = add_workspace_and_contacts(engine, 4)
    events: list[EmailEvent] = []
    for event in random_events(rng, workspace_id, contact_ids, 120):
        before = pair_events(events, event)
        events.append(event)
        insert_events(engine, [event])
        add_deltas(engine, engagement_counter_deltas(before, pair_events(events, event)))
    for position in rng.sample(range(len(events)), 40):
        before = pair_events(events, events[position])
        events[position] = dataclasses.replace(events[position], verdict=bot_verdict(BotType.TIMING))
        store_verdict(engine, events[position])
        add_deltas(engine, engagement_counter_deltas(before, pair_events(events, events[position])))
    rows_from_deltas = counter_row_count(engine)

    assert_counts_match_events(engine, events, workspace_id)
    # Counters that went back to 0 stay as rows until a rebuild, which writes none of them.
    assert rebuild(engine) <= rows_from_deltas
    assert_counts_match_events(engine, events, workspace_id)


def pair_events(events: Sequence[EmailEvent], of: EmailEvent) -> list[EmailEvent]:
    return [event for event in events if (event.message_id, event.contact_id) == (of.message_id, of.contact_id)]


def add_deltas(engine: Engine, deltas: dict[EngagementCounterKey, int]) -> None:
    with Session(engine) as session, session.begin():
        add_to_engagement_counters(session, deltas)


def store_verdict(engine: Engine, event: EmailEvent) -> None:
    values = row_values(event)
    verdict_columns = ("is_bot", "bot_type", "bot_confidence", "bot_signals", "classifier_version")
    with engine.begin() as connection:
        connection.execute(
            update(EmailEventRow)
            .where(EmailEventRow.id == event.id)
            .values({column: values[column] for column in verdict_columns})
        )


def test_migration_backfills_counters(empty_database_url: str) -> None:
    engine = create_database_engine(empty_database_url)
    try:
        migrate_to(engine, "0004")
        rng = random.Random(5)
        workspace_id, contact_ids = add_workspace_and_contacts(engine, 5)
        events = random_events(rng, workspace_id, contact_ids, 150)
        insert_events(engine, events)

        upgrade_to_latest(engine)
        assert_counts_match_events(engine, events, workspace_id)

        migrate_to(engine, "0004", down=True)
        assert current_revisions(engine) == ("0004",)
        assert "engagement_counters" not in inspect(engine).get_table_names()

        upgrade_to_latest(engine)
        assert_counts_match_events(engine, events, workspace_id)
    finally:
        engine.dispose()


def test_migration_from_counters_adds_tallies(empty_database_url: str) -> None:
    # A database at 0005 has counters but no message tallies; the next revision adds and fills
    # them, and recomputes the counters from the stored events.
    engine = create_database_engine(empty_database_url)
    try:
        migrate_to(engine, "0005")
        workspace_id, contact_ids = add_workspace_and_contacts(engine, 4)
        events = random_events(random.Random(8), workspace_id, contact_ids, 80)
        insert_events(engine, events)
        assert "message_event_tallies" not in inspect(engine).get_table_names()

        upgrade_to_latest(engine)

        assert "message_event_tallies" in inspect(engine).get_table_names()
        assert_counts_match_events(engine, events, workspace_id)
        with engine.connect() as connection:
            tallies = connection.scalar(select(func.count()).select_from(message_event_tallies))
        pairs = {(event.message_id, event.contact_id) for event in events}
        assert tallies == len(pairs)
    finally:
        engine.dispose()
