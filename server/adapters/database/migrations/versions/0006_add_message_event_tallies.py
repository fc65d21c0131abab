"""Add event tallies per contact's message, and fill them and the engagement counters.

A transaction that records events reads these tallies instead of counting a message's whole
history, which a flood of pixel loads can make long. This revision is separate from 0005 so
that databases already at 0005 get the table too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from server.adapters.database.engagement_counters import rebuild_engagement_counters

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_event_tallies",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("tally", sa.JSON(), nullable=False),
        sa.Column("has_recorded_human_open", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_message_event_tallies_workspace_id_workspaces")
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_message_event_tallies_contact_id_contacts")
        ),
        sa.PrimaryKeyConstraint("workspace_id", "message_id", "contact_id", name=op.f("pk_message_event_tallies")),
    )
    # NOTE: the backfill runs the service's current rebuild code, so it reads email_events and
    # writes the counters and tallies as the latest schema defines them. A later migration that
    # changes the columns it uses must keep this revision working on a 0005 database.
    with Session(bind=op.get_bind()) as session:
        rebuild_engagement_counters(session)


def downgrade() -> None:
    op.drop_table("message_event_tallies")
