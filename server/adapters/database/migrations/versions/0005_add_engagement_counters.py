"""Add engagement counters per message and per campaign.

GetEngagementStats reads these counters instead of aggregating email_events, which took
seconds for a campaign of a million events. The transactions that record events keep them
current; revision 0006 computes them once for the events already stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One column per metric, as server/domain/engagement.py names them in this revision.
_COUNTER_COLUMNS = (
    "delivered_events",
    "delivered_messages",
    "delivered_human_events",
    "delivered_human_messages",
    "opened_events",
    "opened_messages",
    "opened_human_events",
    "opened_human_messages",
    "clicked_events",
    "clicked_messages",
    "clicked_human_events",
    "clicked_human_messages",
    "apple_mpp_opens_events",
    "apple_mpp_opens_messages",
    "bot_security_scanner_delivered",
    "bot_security_scanner_opened",
    "bot_security_scanner_clicked",
    "bot_apple_mpp_delivered",
    "bot_apple_mpp_opened",
    "bot_apple_mpp_clicked",
    "bot_datacenter_delivered",
    "bot_datacenter_opened",
    "bot_datacenter_clicked",
    "bot_timing_delivered",
    "bot_timing_opened",
    "bot_timing_clicked",
    "bot_honeypot_delivered",
    "bot_honeypot_opened",
    "bot_honeypot_clicked",
    "bot_user_agent_delivered",
    "bot_user_agent_opened",
    "bot_user_agent_clicked",
    "bot_behavior_delivered",
    "bot_behavior_opened",
    "bot_behavior_clicked",
    "bot_prefetch_delivered",
    "bot_prefetch_opened",
    "bot_prefetch_clicked",
)


def upgrade() -> None:
    op.create_table(
        "engagement_counters",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("scope_kind", sa.String(length=10), nullable=False),
        sa.Column("scope_id", sa.String(length=200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False) for name in _COUNTER_COLUMNS),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_engagement_counters_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("workspace_id", "scope_kind", "scope_id", name=op.f("pk_engagement_counters")),
    )
    # Revision 0006 fills the counters, together with the message tallies that the rebuild also
    # writes and that this revision does not create.


def downgrade() -> None:
    op.drop_table("engagement_counters")
