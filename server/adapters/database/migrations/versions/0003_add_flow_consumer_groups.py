"""Add consumer groups of the flow-trigger feed, and indexes for retractions and campaign figures.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flow_consumer_groups",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_flow_consumer_groups_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("workspace_id", "name", name=op.f("pk_flow_consumer_groups")),
    )
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_events_workspace_id_campaign_id_message_id_contact_id"),
            ["workspace_id", "campaign_id", "message_id", "contact_id"],
            unique=False,
        )
    with op.batch_alter_table("flow_triggers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_flow_triggers_workspace_id_subject_id"), ["workspace_id", "subject_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("flow_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_triggers_workspace_id_subject_id"))

    op.drop_table("flow_consumer_groups")
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_events_workspace_id_campaign_id_message_id_contact_id"))
