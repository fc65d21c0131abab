"""SQL storage of e-mail events: the per-message transaction, listings and engagement counts."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.adapters.database.outbox import insert_flow_triggers, triggers_of_subjects
from server.adapters.database.repository import SqlStore
from server.adapters.database.schema import EmailEventRow
from server.domain.classification import BotType, Confidence, EmailEventType
from server.domain.email_events import EmailEvent, EventVerdict
from server.domain.engagement import EmailEventQuery, EngagementCounts, EngagementScope, EventCounts
from server.domain.flow_triggers import FlowTrigger, TriggerReference
from server.usecases.ports import IdempotencyKeyTaken, StoredClick

_CONFIDENCE_NAMES = {confidence: confidence.name.lower() for confidence in Confidence}
_CONFIDENCE_BY_NAME = {name: confidence for confidence, name in _CONFIDENCE_NAMES.items()}


class SqlEmailEventStore:
    """Implements EmailEventStore on the same engine and transaction handling as SqlStore."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @contextmanager
    def message_events(
        self, workspace_id: uuid.UUID, contact_id: uuid.UUID, message_id: str
    ) -> Iterator[SqlMessageEvents]:
        added_keys: list[str] = []
        try:
            with self._store.transaction() as session:
                if session.get_bind().dialect.name == "postgresql":
                    # Serializes calls for one contact and message across server processes, so that
                    # bursts and inferred opens see every earlier click. SQLite's BEGIN IMMEDIATE
                    # already runs one write transaction at a time.
                    session.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _lock_key(workspace_id, contact_id, message_id)},
                    )
                yield SqlMessageEvents(session, workspace_id, contact_id, message_id, added_keys)
        except IntegrityError:
            if not added_keys:
                raise
            raise IdempotencyKeyTaken() from None

    def find_email_event_by_idempotency_key(self, workspace_id: uuid.UUID, idempotency_key: str) -> EmailEvent | None:
        with self._store.transaction() as session:
            row = session.scalars(
                select(EmailEventRow).where(
                    EmailEventRow.workspace_id == workspace_id, EmailEventRow.idempotency_key == idempotency_key
                )
            ).one_or_none()
            return email_event_from_row(row) if row is not None else None

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
        in_scope = [EmailEventRow.workspace_id == workspace_id]
        if scope.message_id is not None:
            in_scope.append(EmailEventRow.message_id == scope.message_id)
        if scope.campaign_id is not None:
            # Every event of a message that belongs to the campaign counts, also events recorded
            # without the campaign id (an open through the pixel of a plain send, say).
            campaign_messages = select(EmailEventRow.message_id, EmailEventRow.contact_id).where(
                EmailEventRow.workspace_id == workspace_id, EmailEventRow.campaign_id == scope.campaign_id
            )
            in_scope.append(tuple_(EmailEventRow.message_id, EmailEventRow.contact_id).in_(campaign_messages))
        with self._store.transaction() as session:
            everyone = _count_by_type(session, in_scope)
            human = _count_by_type(session, [*in_scope, EmailEventRow.is_bot.is_(False)])
            apple = _count_by_type(
                session,
                [
                    *in_scope,
                    EmailEventRow.bot_type == BotType.APPLE_MPP.value,
                    EmailEventRow.event_type == EmailEventType.OPENED.value,
                ],
            ).get(EmailEventType.OPENED, EventCounts())
            by_bot_type: dict[BotType, tuple[int, int]] = {}
            rows = session.execute(
                select(EmailEventRow.bot_type, EmailEventRow.event_type, func.count())
                .where(*in_scope, EmailEventRow.is_bot.is_(True))
                .group_by(EmailEventRow.bot_type, EmailEventRow.event_type)
            )
            for bot_type_name, event_type_name, count in rows:
                bot_type = BotType(bot_type_name)
                opens, clicks = by_bot_type.get(bot_type, (0, 0))
                if event_type_name == EmailEventType.OPENED.value:
                    opens += count
                elif event_type_name == EmailEventType.CLICKED.value:
                    clicks += count
                by_bot_type[bot_type] = (opens, clicks)
        return EngagementCounts(human=human, everyone=everyone, apple_mpp_opens=apple, by_bot_type=by_bot_type)


def _count_by_type(session: Session, conditions: list[ColumnElement[bool]]) -> dict[EmailEventType, EventCounts]:
    """Count events and distinct (contact, message) pairs per event type, in the database."""
    events = {
        name: int(count)
        for name, count in session.execute(
            select(EmailEventRow.event_type, func.count()).where(*conditions).group_by(EmailEventRow.event_type)
        )
    }
    pairs = (
        select(EmailEventRow.event_type, EmailEventRow.contact_id, EmailEventRow.message_id)
        .where(*conditions)
        .distinct()
        .subquery()
    )
    messages = {
        name: int(count)
        for name, count in session.execute(select(pairs.c.event_type, func.count()).group_by(pairs.c.event_type))
    }
    return {
        EmailEventType(name): EventCounts(events=int(count), messages=int(messages.get(name, 0)))
        for name, count in events.items()
    }


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


class SqlMessageEvents:
    """MessageEventsTransaction on an open session that holds the message's lock."""

    def __init__(
        self,
        session: Session,
        workspace_id: uuid.UUID,
        contact_id: uuid.UUID,
        message_id: str,
        added_keys: list[str],
    ) -> None:
        self._session = session
        self._workspace_id = workspace_id
        self._added_keys = added_keys
        self._of_message = (
            EmailEventRow.workspace_id == workspace_id,
            EmailEventRow.message_id == message_id,
            EmailEventRow.contact_id == contact_id,
        )

    def delivery_time(self) -> datetime | None:
        return self._session.scalar(
            select(func.min(EmailEventRow.occurred_at)).where(
                *self._of_message, EmailEventRow.event_type == EmailEventType.DELIVERED.value
            )
        )

    def clicks_between(self, start: datetime, end: datetime) -> list[StoredClick]:
        rows = self._session.execute(
            select(EmailEventRow.id, EmailEventRow.occurred_at, EmailEventRow.is_bot).where(
                *self._of_message,
                EmailEventRow.event_type == EmailEventType.CLICKED.value,
                EmailEventRow.occurred_at >= start,
                EmailEventRow.occurred_at <= end,
            )
        )
        return [StoredClick(id=row.id, occurred_at=row.occurred_at, is_bot=row.is_bot) for row in rows]

    def add_event(self, event: EmailEvent) -> None:
        if event.idempotency_key is not None:
            self._added_keys.append(event.idempotency_key)
        self._session.execute(insert(EmailEventRow).values(**_row_values(event)))
        # Flushes now so that a taken idempotency key fails inside the transaction.
        self._session.flush()

    def mark_clicks_as_bots(self, click_ids: list[uuid.UUID], verdict: EventVerdict) -> list[EmailEvent]:
        targets = or_(EmailEventRow.id.in_(click_ids), EmailEventRow.inferred_from_event_id.in_(click_ids))
        changed_ids = list(
            self._session.scalars(
                select(EmailEventRow.id).where(*self._of_message, targets, EmailEventRow.is_bot.is_(False))
            )
        )
        if not changed_ids:
            return []
        self._session.execute(
            update(EmailEventRow).where(EmailEventRow.id.in_(changed_ids)).values(**_verdict_values(verdict)),
            execution_options={"synchronize_session": False},
        )
        rows = self._session.scalars(
            select(EmailEventRow).where(EmailEventRow.id.in_(changed_ids)).order_by(EmailEventRow.occurred_at)
        )
        return [email_event_from_row(row) for row in rows]

    def add_triggers(self, triggers: list[FlowTrigger], now: datetime) -> None:
        insert_flow_triggers(self._session, triggers, now)

    def triggers_of_events(self, event_ids: list[uuid.UUID]) -> list[TriggerReference]:
        return triggers_of_subjects(self._session, self._workspace_id, event_ids)

    def has_human_open(self) -> bool:
        found = self._session.scalar(
            select(EmailEventRow.id)
            .where(
                *self._of_message,
                EmailEventRow.event_type == EmailEventType.OPENED.value,
                EmailEventRow.is_bot.is_(False),
            )
            .limit(1)
        )
        return found is not None

    def earliest_human_click(self) -> EmailEvent | None:
        row = self._session.scalars(
            select(EmailEventRow)
            .where(
                *self._of_message,
                EmailEventRow.event_type == EmailEventType.CLICKED.value,
                EmailEventRow.is_bot.is_(False),
            )
            .order_by(EmailEventRow.occurred_at, EmailEventRow.id)
            .limit(1)
        ).one_or_none()
        return email_event_from_row(row) if row is not None else None


def _lock_key(workspace_id: uuid.UUID, contact_id: uuid.UUID, message_id: str) -> int:
    """Return a signed 64-bit advisory lock key for one contact's events on one message."""
    digest = hashlib.sha256(f"email-events:{workspace_id}:{contact_id}:{message_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _verdict_values(verdict: EventVerdict) -> dict[str, Any]:
    return {
        "is_bot": verdict.is_bot,
        "bot_type": verdict.bot_type.value if verdict.bot_type else None,
        "bot_confidence": _CONFIDENCE_NAMES[verdict.confidence] if verdict.confidence else None,
        "bot_signals": list(verdict.signals),
        "classifier_version": verdict.classifier_version,
    }


def _row_values(event: EmailEvent) -> dict[str, Any]:
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


def email_event_from_row(row: EmailEventRow) -> EmailEvent:
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
