"""SQL storage of e-mail events: batch transactions, listings and engagement counts."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    String,
    Table,
    Uuid,
    and_,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from server.adapters.database.engagement_counters import (
    MessageTally,
    add_to_engagement_counters,
    read_engagement_counters,
    read_message_tallies,
    write_message_tallies,
)
from server.adapters.database.outbox import insert_flow_triggers, triggers_of_subjects
from server.adapters.database.repository import SqlContactLookup, SqlStore
from server.adapters.database.schema import EmailEventRow
from server.domain.classification import BotType, Confidence, EmailEventType
from server.domain.email_events import EmailEvent, EventVerdict
from server.domain.engagement import (
    EmailEventQuery,
    EngagementCounterKey,
    EngagementCounts,
    EngagementScope,
    TallyKey,
    engagement_counter_scope,
    engagement_counts_from_counters,
)
from server.domain.errors import StorageUnavailable
from server.domain.flow_triggers import FlowTrigger, TriggerReference
from server.usecases.ports import IdempotencyKeyTaken, MessageKey, StoredHistory

logger = logging.getLogger(__name__)

_CONFIDENCE_NAMES = {confidence: confidence.name.lower() for confidence in Confidence}
_CONFIDENCE_BY_NAME = {name: confidence for confidence, name in _CONFIDENCE_NAMES.items()}


class SqlEmailEventStore:
    """Implements EmailEventStore on the same engine and transaction handling as SqlStore."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @contextmanager
    def email_event_batch(self) -> Iterator[SqlEmailEventBatch]:
        """Open a batch transaction; staged writes are applied right before commit."""
        batch: SqlEmailEventBatch | None = None
        try:
            with self._store.transaction() as session:
                batch = SqlEmailEventBatch(session)
                yield batch
                batch.flush()
        except IntegrityError:
            if batch is None or not batch.has_idempotency_keys():
                raise
            raise IdempotencyKeyTaken() from None

    def list_email_events(self, query: EmailEventQuery) -> list[EmailEvent]:
        conditions = _filter_conditions(query)
        if query.after is not None:
            conditions.append(
                or_(
                    EmailEventRow.occurred_at < query.after.occurred_at,
                    and_(
                        EmailEventRow.occurred_at == query.after.occurred_at,
                        EmailEventRow.id < query.after.event_id,
                    ),
                )
            )
        statement = (
            select(EmailEventRow)
            .where(*conditions)
            .order_by(EmailEventRow.occurred_at.desc(), EmailEventRow.id.desc())
            .limit(query.limit)
        )
        with self._store.transaction() as session:
            return [email_event_from_row(row) for row in session.scalars(statement)]

    def count_engagement(self, workspace_id: uuid.UUID, scope: EngagementScope) -> EngagementCounts:
        scope_kind, scope_id = engagement_counter_scope(scope)
        with self._store.transaction() as session:
            counters = read_engagement_counters(session, workspace_id, scope_kind, scope_id)
        return engagement_counts_from_counters(counters)


def _filter_conditions(query: EmailEventQuery) -> list[ColumnElement[bool]]:
    listing = query.filter
    conditions: list[ColumnElement[bool]] = [EmailEventRow.workspace_id == query.workspace_id]
    if listing.message_id is not None:
        conditions.append(EmailEventRow.message_id == listing.message_id)
    if listing.campaign_id is not None:
        conditions.append(EmailEventRow.campaign_id == listing.campaign_id)
    if listing.contact_id is not None:
        conditions.append(EmailEventRow.contact_id == listing.contact_id)
    if listing.event_type is not None:
        conditions.append(EmailEventRow.event_type == listing.event_type.value)
    if listing.start_time is not None:
        conditions.append(EmailEventRow.occurred_at >= listing.start_time)
    if listing.end_time is not None:
        conditions.append(EmailEventRow.occurred_at < listing.end_time)
    if listing.is_bot is not None:
        conditions.append(EmailEventRow.is_bot.is_(listing.is_bot))
    return conditions


class SqlEmailEventBatch(SqlContactLookup):
    """Implements EmailEventBatch on an open session; `flush` applies what was staged.

    `flush` writes in a fixed order: events sorted by idempotency key, verdict changes,
    engagement counters in key order, message tallies in key order, then flow triggers. Every batch takes its row locks and
    advisory locks in that order, so two batches can wait for each other but not deadlock.
    """

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._postgresql = session.get_bind().dialect.name == "postgresql"
        self._events: list[EmailEvent] = []
        self._reclassified: list[EmailEvent] = []
        self._counter_deltas: dict[EngagementCounterKey, int] = {}
        self._tallies: dict[tuple[uuid.UUID, str, uuid.UUID], MessageTally] = {}
        self._triggers: list[FlowTrigger] = []
        self._triggers_created_at: datetime | None = None

    def email_events_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_keys: Collection[str]
    ) -> dict[str, EmailEvent]:
        if not idempotency_keys:
            return {}
        rows = self._connection.execute(
            select(*_EVENT_COLUMNS).where(
                EmailEventRow.workspace_id == workspace_id, EmailEventRow.idempotency_key.in_(idempotency_keys)
            )
        )
        return {row.idempotency_key: email_event_from_row(row) for row in rows}

    def lock_message_histories(
        self, keys: Sequence[MessageKey], click_windows: Mapping[MessageKey, tuple[datetime, datetime]]
    ) -> dict[MessageKey, StoredHistory]:
        if not keys:
            return {}
        if self._postgresql:
            # Serializes batches that touch the same contact and message, across server processes,
            # so that bursts and inferred opens see every earlier click. Locks are taken in key
            # order, so two batches never deadlock on them. SQLite's BEGIN IMMEDIATE already runs
            # one write transaction at a time.
            self._connection.execute(
                text(
                    "SELECT pg_advisory_xact_lock(lock.key)"
                    " FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS lock(key, n) ORDER BY lock.n"
                ),
                {"keys": sorted({_lock_key(key) for key in keys})},
            )
        keys_by_workspace: dict[uuid.UUID, list[MessageKey]] = {}
        for key in keys:
            keys_by_workspace.setdefault(key.workspace_id, []).append(key)
        histories: dict[MessageKey, StoredHistory] = {}
        for workspace_id, workspace_keys in keys_by_workspace.items():
            events = self._events_that_rules_read(workspace_id, workspace_keys, click_windows)
            tallies, recorded_human_opens = self._tally(workspace_id, workspace_keys)
            for key in workspace_keys:
                histories[key] = StoredHistory(
                    events=events.get(key, []),
                    tally=tallies.get(key, Counter()),
                    has_recorded_human_open=key in recorded_human_opens,
                )
        return histories

    def _events_that_rules_read(
        self,
        workspace_id: uuid.UUID,
        keys: list[MessageKey],
        click_windows: Mapping[MessageKey, tuple[datetime, datetime]],
    ) -> dict[MessageKey, list[EmailEvent]]:
        clicked = EmailEventRow.event_type == EmailEventType.CLICKED.value
        always_read = or_(
            EmailEventRow.event_type == EmailEventType.DELIVERED.value,
            and_(EmailEventRow.event_type == EmailEventType.OPENED.value, EmailEventRow.inferred.is_(True)),
            and_(clicked, EmailEventRow.is_bot.is_(False)),
        )
        if self._postgresql:
            # Joining the keys as an unnested array makes PostgreSQL look each key up in the
            # (workspace, message, contact, ...) index. With an IN list and this OR, it planned
            # scans of every click of the workspace, which grew with the table.
            wanted = (
                func.unnest(
                    literal([key.message_id for key in keys], ARRAY(String)),
                    literal([key.contact_id for key in keys], ARRAY(Uuid)),
                    literal([_window(click_windows, key, 0) for key in keys], ARRAY(DateTime(timezone=True))),
                    literal([_window(click_windows, key, 1) for key in keys], ARRAY(DateTime(timezone=True))),
                )
                .table_valued("message_id", "contact_id", "window_start", "window_end")
                .render_derived()
            )
            statement = (
                select(*_EVENT_COLUMNS)
                .join_from(
                    EmailEventRow,
                    wanted,
                    and_(
                        EmailEventRow.workspace_id == workspace_id,
                        EmailEventRow.message_id == wanted.c.message_id,
                        EmailEventRow.contact_id == wanted.c.contact_id,
                    ),
                )
                .where(
                    or_(
                        always_read,
                        and_(clicked, EmailEventRow.occurred_at.between(wanted.c.window_start, wanted.c.window_end)),
                    )
                )
            )
        else:
            near_new_clicks = [
                and_(
                    EmailEventRow.message_id == key.message_id,
                    EmailEventRow.contact_id == key.contact_id,
                    EmailEventRow.occurred_at.between(*click_windows[key]),
                )
                for key in keys
                if key in click_windows
            ]
            statement = select(*_EVENT_COLUMNS).where(
                EmailEventRow.workspace_id == workspace_id,
                tuple_(EmailEventRow.message_id, EmailEventRow.contact_id).in_(
                    [(key.message_id, key.contact_id) for key in keys]
                ),
                or_(always_read, and_(clicked, or_(*near_new_clicks)) if near_new_clicks else false()),
            )
        rows = self._connection.execute(statement.order_by(EmailEventRow.occurred_at, EmailEventRow.id))
        events: dict[MessageKey, list[EmailEvent]] = {}
        for row in rows:
            events.setdefault(MessageKey(workspace_id, row.message_id, row.contact_id), []).append(
                email_event_from_row(row)
            )
        return events

    def _tally(
        self, workspace_id: uuid.UUID, keys: list[MessageKey]
    ) -> tuple[dict[MessageKey, Counter[TallyKey]], set[MessageKey]]:
        """Return the stored event counts of the keys, and the keys with a recorded human open."""
        found = read_message_tallies(self._session, workspace_id, [(key.message_id, key.contact_id) for key in keys])
        tallies: dict[MessageKey, Counter[TallyKey]] = {}
        recorded_human_opens: set[MessageKey] = set()
        for (message_id, contact_id), message_tally in found.items():
            key = MessageKey(workspace_id, message_id, contact_id)
            tallies[key] = message_tally.tally
            if message_tally.has_recorded_human_open:
                recorded_human_opens.add(key)
        return tallies, recorded_human_opens

    def triggers_of_events(self, workspace_id: uuid.UUID, event_ids: Collection[uuid.UUID]) -> list[TriggerReference]:
        try:
            return triggers_of_subjects(self._session, workspace_id, list(event_ids))
        except SQLAlchemyError as error:
            # Raised while one event is being recorded, where any other error fails only that
            # event. A failed statement leaves the whole transaction unusable, so it fails the batch.
            logger.warning("database call failed", extra={"error": type(error).__name__})
            raise StorageUnavailable() from error

    def add_events(self, events: Sequence[EmailEvent]) -> None:
        self._events += events

    def update_verdicts(self, events: Sequence[EmailEvent]) -> None:
        self._reclassified += events

    def add_to_engagement_counters(self, deltas: Mapping[EngagementCounterKey, int]) -> None:
        for key, delta in deltas.items():
            self._counter_deltas[key] = self._counter_deltas.get(key, 0) + delta

    def update_message_tallies(self, tallies: Mapping[MessageKey, tuple[Counter[TallyKey], bool]]) -> None:
        for key, (tally, has_recorded_human_open) in tallies.items():
            self._tallies[(key.workspace_id, key.message_id, key.contact_id)] = MessageTally(
                tally, has_recorded_human_open
            )

    def add_triggers(self, triggers: Sequence[FlowTrigger], now: datetime) -> None:
        self._triggers += triggers
        self._triggers_created_at = now

    def has_idempotency_keys(self) -> bool:
        return any(event.idempotency_key is not None for event in self._events)

    def flush(self) -> None:
        if self._events:
            # Key order: two batches that retry the same keys wait for each other on the unique
            # index in the same order.
            events = sorted(self._events, key=_idempotency_order)
            self._connection.execute(insert(_EMAIL_EVENTS), [email_event_row_values(event) for event in events])
        by_verdict: dict[EventVerdict, list[uuid.UUID]] = {}
        for event in self._reclassified:
            by_verdict.setdefault(event.verdict, []).append(event.id)
        for verdict, event_ids in by_verdict.items():
            self._connection.execute(
                update(_EMAIL_EVENTS).where(EmailEventRow.id.in_(event_ids)).values(**_verdict_values(verdict))
            )
        add_to_engagement_counters(self._session, self._counter_deltas)
        write_message_tallies(self._session, self._tallies)
        if self._triggers and self._triggers_created_at is not None:
            insert_flow_triggers(self._session, self._triggers, self._triggers_created_at)


_EMAIL_EVENTS = cast(Table, EmailEventRow.__table__)
_EVENT_COLUMNS = tuple(_EMAIL_EVENTS.columns)


def _window(windows: Mapping[MessageKey, tuple[datetime, datetime]], key: MessageKey, end: int) -> datetime | None:
    window = windows.get(key)
    return window[end] if window is not None else None


def _idempotency_order(event: EmailEvent) -> tuple[str, str]:
    return str(event.workspace_id), event.idempotency_key or ""


def _lock_key(key: MessageKey) -> int:
    """Return a signed 64-bit advisory lock key for one contact's events on one message."""
    digest = hashlib.sha256(f"email-events:{key.workspace_id}:{key.contact_id}:{key.message_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _verdict_values(verdict: EventVerdict) -> dict[str, Any]:
    return {
        "is_bot": verdict.is_bot,
        "bot_type": verdict.bot_type.value if verdict.bot_type else None,
        "bot_confidence": _CONFIDENCE_NAMES[verdict.confidence] if verdict.confidence else None,
        "bot_signals": list(verdict.signals),
        "classifier_version": verdict.classifier_version,
    }


def email_event_row_values(event: EmailEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "workspace_id": event.workspace_id,
        "contact_id": event.contact_id,
        "message_id": event.message_id,
        "campaign_id": event.campaign_id,
        "event_type": event.event_type.value,
        "occurred_at": event.occurred_at,
        "recorded_at": event.recorded_at,
        "client_ip": event.client_ip,
        "user_agent": event.user_agent,
        "http_method": event.http_method,
        "request_headers": event.request_headers,
        "link_url": event.link_url,
        "link_id": event.link_id,
        "honeypot_link": event.honeypot_link,
        "delivered_at": event.delivered_at,
        "inferred": event.inferred,
        "inferred_from_event_id": event.inferred_from_event_id,
        "idempotency_key": event.idempotency_key,
        "request_fingerprint": event.request_fingerprint,
        **_verdict_values(event.verdict),
    }


def email_event_from_row(row: Any) -> EmailEvent:
    # `row` is an EmailEventRow or a Core row with the same column names.
    verdict = EventVerdict(
        is_bot=row.is_bot,
        bot_type=BotType(row.bot_type) if row.bot_type else None,
        confidence=_CONFIDENCE_BY_NAME[row.bot_confidence] if row.bot_confidence else None,
        signals=tuple(row.bot_signals),
        classifier_version=row.classifier_version,
    )
    return EmailEvent(
        id=row.id,
        workspace_id=row.workspace_id,
        contact_id=row.contact_id,
        message_id=row.message_id,
        campaign_id=row.campaign_id,
        event_type=EmailEventType(row.event_type),
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        client_ip=row.client_ip,
        user_agent=row.user_agent,
        http_method=row.http_method,
        request_headers=dict(row.request_headers),
        link_url=row.link_url,
        link_id=row.link_id,
        honeypot_link=row.honeypot_link,
        delivered_at=row.delivered_at,
        verdict=verdict,
        inferred=row.inferred,
        inferred_from_event_id=row.inferred_from_event_id,
        idempotency_key=row.idempotency_key,
        request_fingerprint=row.request_fingerprint,
    )
