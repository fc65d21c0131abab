"""SQL storage of the flow-trigger feed: reads, consumer-group acknowledgements and pruning."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.adapters.database.repository import SqlStore
from server.adapters.database.schema import FlowConsumerGroupRow, FlowTriggerRow
from server.domain.flow_triggers import FlowTrigger, FlowTriggerType, StoredFlowTrigger


class SqlFlowTriggerStore:
    """Implements FlowTriggerStore on the engine of a SqlStore."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def read_flow_triggers(
        self, workspace_id: uuid.UUID, after_position: int, trigger_types: frozenset[FlowTriggerType], limit: int
    ) -> list[StoredFlowTrigger]:
        statement = (
            select(FlowTriggerRow)
            .where(FlowTriggerRow.workspace_id == workspace_id, FlowTriggerRow.position > after_position)
            .order_by(FlowTriggerRow.position)
            .limit(limit)
        )
        if trigger_types:
            statement = statement.where(FlowTriggerRow.trigger_type.in_([kind.value for kind in trigger_types]))
        with self._store.transaction() as session:
            return [_stored_trigger(row) for row in session.scalars(statement)]

    def acknowledged_position(self, workspace_id: uuid.UUID, consumer_group: str) -> int | None:
        with self._store.transaction() as session:
            return session.scalar(
                select(FlowConsumerGroupRow.position).where(
                    FlowConsumerGroupRow.workspace_id == workspace_id, FlowConsumerGroupRow.name == consumer_group
                )
            )

    def newest_position(self, workspace_id: uuid.UUID) -> int:
        """Return the position of the workspace's newest stored trigger, or 0 when it has none."""
        with self._store.transaction() as session:
            newest = session.scalar(
                select(func.max(FlowTriggerRow.position)).where(FlowTriggerRow.workspace_id == workspace_id)
            )
            return int(newest or 0)

    def acknowledge(self, workspace_id: uuid.UUID, consumer_group: str, position: int, now: datetime) -> int:
        """Store the group's position unless a later one is stored; return the stored position.

        One upsert statement, so concurrent first acknowledgements of a new group neither fail nor
        move the position back.
        """
        with self._store.transaction() as session:
            dialect = session.get_bind().dialect.name
            upsert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            later = func.greatest if dialect == "postgresql" else func.max
            statement = upsert(FlowConsumerGroupRow).values(
                workspace_id=workspace_id, name=consumer_group, position=position, updated_at=now
            )
            statement = statement.on_conflict_do_update(
                index_elements=[FlowConsumerGroupRow.workspace_id, FlowConsumerGroupRow.name],
                set_={
                    "position": later(FlowConsumerGroupRow.position, statement.excluded.position),
                    "updated_at": now,
                },
            )
            session.execute(statement)
            stored = session.scalar(
                select(FlowConsumerGroupRow.position).where(
                    FlowConsumerGroupRow.workspace_id == workspace_id, FlowConsumerGroupRow.name == consumer_group
                )
            )
            return int(stored or 0)

    def prune_flow_triggers(self, created_before: datetime) -> dict[uuid.UUID, int]:
        """Delete triggers created before the time and acknowledged by every group of their workspace.

        A workspace without consumer groups has nothing to wait for, so its old triggers go.
        Returns the number of triggers deleted per workspace.
        """
        removed: dict[uuid.UUID, int] = {}
        with self._store.transaction() as session:
            workspaces = session.scalars(
                select(FlowTriggerRow.workspace_id).where(FlowTriggerRow.created_at < created_before).distinct()
            ).all()
            for workspace_id in workspaces:
                acknowledged = session.scalar(
                    select(func.min(FlowConsumerGroupRow.position)).where(
                        FlowConsumerGroupRow.workspace_id == workspace_id
                    )
                )
                has_groups = session.scalar(
                    select(func.count()).where(FlowConsumerGroupRow.workspace_id == workspace_id)
                )
                statement = delete(FlowTriggerRow).where(
                    FlowTriggerRow.workspace_id == workspace_id, FlowTriggerRow.created_at < created_before
                )
                if has_groups:
                    statement = statement.where(FlowTriggerRow.position <= (acknowledged or 0))
                result = cast(CursorResult[Any], session.execute(statement))
                count = result.rowcount
                if count:
                    removed[workspace_id] = count
        return removed


def _stored_trigger(row: FlowTriggerRow) -> StoredFlowTrigger:
    trigger = FlowTrigger(
        id=row.id,
        workspace_id=row.workspace_id,
        trigger_type=FlowTriggerType(row.trigger_type),
        ordering_key=row.ordering_key,
        subject_id=row.subject_id,
        payload=dict(row.payload),
        occurred_at=row.occurred_at,
    )
    return StoredFlowTrigger(trigger=trigger, position=row.position, created_at=row.created_at)
