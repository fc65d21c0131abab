"""Add the e-mail events table with raw facts, verdicts and inferred-open links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("campaign_id", sa.String(length=200), nullable=True),
        sa.Column("event_type", sa.String(length=20), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=2048), nullable=False),
        sa.Column("http_method", sa.String(length=10), nullable=True),
        sa.Column("request_headers", sa.JSON(), nullable=False),
        sa.Column("link_url", sa.String(length=2048), nullable=True),
        sa.Column("link_id", sa.String(length=200), nullable=True),
        sa.Column("honeypot_link", sa.Boolean(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.Column("bot_type", sa.String(length=30), nullable=True),
        sa.Column("bot_confidence", sa.String(length=10), nullable=True),
        sa.Column("bot_signals", sa.JSON(), nullable=False),
        sa.Column("classifier_version", sa.String(length=100), nullable=False),
        sa.Column("inferred", sa.Boolean(), nullable=False),
        sa.Column("inferred_from_event_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_email_events_contact_id_contacts")),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_email_events_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_events")),
        sa.UniqueConstraint(
            "workspace_id", "idempotency_key", name=op.f("uq_email_events_workspace_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_events_inferred_from_event_id"), ["inferred_from_event_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_email_events_workspace_id_campaign_id_event_type"),
            ["workspace_id", "campaign_id", "event_type"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_email_events_workspace_id_message_id_contact_id_event_type_occurred_at"),
            ["workspace_id", "message_id", "contact_id", "event_type", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_email_events_workspace_id_occurred_at_id"),
            ["workspace_id", "occurred_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_events_workspace_id_occurred_at_id"))
        batch_op.drop_index(batch_op.f("ix_email_events_workspace_id_message_id_contact_id_event_type_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_email_events_workspace_id_campaign_id_event_type"))
        batch_op.drop_index(batch_op.f("ix_email_events_inferred_from_event_id"))

    op.drop_table("email_events")
