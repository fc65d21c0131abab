"""Tables of the tracking service. Alembic migrations create and change them."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.adapters.database.column_types import ExactDecimal, UtcDateTime
from server.domain.engagement import engagement_metric_names

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkspaceRow(Base):
    __tablename__ = "workspaces"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"), index=True)
    # SHA-256 hex digest of the whole key; the plain key is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(12))
    mode: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ContactRow(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("workspace_id", "email_lookup_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    email: Mapped[str] = mapped_column(String(254))
    # The address in lower case: addresses are unique per workspace, compared case-insensitively.
    email_lookup_key: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ProductViewRow(Base):
    __tablename__ = "product_views"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index(None, "workspace_id", "contact_id", "viewed_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id"))
    product_id: Mapped[str] = mapped_column(String(100))
    product_name: Mapped[str] = mapped_column(String(200))
    product_url: Mapped[str] = mapped_column(String(2048))
    variant_id: Mapped[str | None] = mapped_column(String(100))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    price_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    currency_code: Mapped[str | None] = mapped_column(String(3))
    category: Mapped[str | None] = mapped_column(String(100))
    brand: Mapped[str | None] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(100))
    session_id: Mapped[str | None] = mapped_column(String(100))
    viewed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # SHA-256 of the view's content, to tell an idempotent retry from a reused key.
    request_fingerprint: Mapped[str] = mapped_column(String(64))


class FlowTriggerRow(Base):
    """The transactional outbox of flow triggers, in the order of `position`."""

    __tablename__ = "flow_triggers"
    __table_args__ = (
        Index(None, "workspace_id", "position"),
        Index(None, "workspace_id", "subject_id"),
        # Without AUTOINCREMENT, SQLite hands out the positions of pruned triggers again.
        {"sqlite_autoincrement": True},
    )

    # SQLite only auto-increments an INTEGER PRIMARY KEY, so the BIGINT is INTEGER there.
    position: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    trigger_type: Mapped[str] = mapped_column(String(50))
    ordering_key: Mapped[str] = mapped_column(String(100))
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EmailEventRow(Base):
    """Deliveries, opens and clicks with the raw facts and the current bot verdict."""

    __tablename__ = "email_events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        # Serves the per-message history that classification reads and message statistics.
        Index(None, "workspace_id", "message_id", "contact_id", "event_type", "occurred_at"),
        Index(None, "workspace_id", "campaign_id", "event_type"),
        Index(None, "workspace_id", "campaign_id", "message_id", "contact_id"),
        Index(None, "workspace_id", "occurred_at", "id"),
        Index(None, "inferred_from_event_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id"))
    message_id: Mapped[str] = mapped_column(String(200))
    campaign_id: Mapped[str | None] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(2048))
    http_method: Mapped[str | None] = mapped_column(String(10))
    request_headers: Mapped[dict[str, str]] = mapped_column(JSON)
    link_url: Mapped[str | None] = mapped_column(String(2048))
    link_id: Mapped[str | None] = mapped_column(String(200))
    honeypot_link: Mapped[bool] = mapped_column(Boolean)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    is_bot: Mapped[bool] = mapped_column(Boolean)
    bot_type: Mapped[str | None] = mapped_column(String(30))
    bot_confidence: Mapped[str | None] = mapped_column(String(10))
    bot_signals: Mapped[list[str]] = mapped_column(JSON)
    classifier_version: Mapped[str] = mapped_column(String(100))
    inferred: Mapped[bool] = mapped_column(Boolean)
    inferred_from_event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))


class FlowConsumerGroupRow(Base):
    """The acknowledged position of one consumer group of a workspace's flow-trigger feed."""

    __tablename__ = "flow_consumer_groups"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


def counter_column_name(metric: str) -> str:
    """Return the column of a metric of server/domain/engagement.py: "opened.events" is opened_events."""
    return metric.replace(".", "_")


# Engagement counts of one message or campaign, one row per scope, kept current by the
# transactions that record events. A metric is a column, so recording an event updates one row
# per scope. The metric names and what they count are listed in server/domain/engagement.py.
engagement_counters = Table(
    "engagement_counters",
    Base.metadata,
    Column("workspace_id", Uuid, ForeignKey("workspaces.id"), primary_key=True),
    # "message" or "campaign", the kind of id in scope_id.
    Column("scope_kind", String(10), primary_key=True),
    Column("scope_id", String(200), primary_key=True),
    *(
        Column(counter_column_name(metric), BigInteger, nullable=False, server_default="0")
        for metric in engagement_metric_names()
    ),
)


# Counts of the stored events of each contact's message, by the fields that engagement counters
# depend on, kept current by the transactions that record events. A batch reads these rows
# instead of counting a message's whole history, which a flood of pixel loads can make long.
message_event_tallies = Table(
    "message_event_tallies",
    Base.metadata,
    Column("workspace_id", Uuid, ForeignKey("workspaces.id"), primary_key=True),
    Column("message_id", String(200), primary_key=True),
    Column("contact_id", Uuid, ForeignKey("contacts.id"), primary_key=True),
    # A JSON list of [event type, is bot, bot type or null, campaign id or null, count].
    Column("tally", JSON, nullable=False),
    # Whether a recorded (not inferred) human open exists; such an open never changes its verdict.
    Column("has_recorded_human_open", Boolean, nullable=False),
)
