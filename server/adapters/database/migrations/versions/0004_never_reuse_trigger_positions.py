"""Never reuse flow-trigger positions on SQLite: rebuild the table with AUTOINCREMENT.

SQLite gives a new row the largest rowid plus one, so after pruning deleted the newest
triggers, new ones got their positions again and consumers past them skipped the new ones.
PostgreSQL positions come from a sequence, which never goes back, so nothing changes there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("flow_triggers", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("flow_triggers", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
