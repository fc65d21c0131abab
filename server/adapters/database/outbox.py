"""Writing the flow-trigger outbox inside the transaction that stores the triggering event."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from server.adapters.database.schema import FlowTriggerRow
from server.domain.flow_triggers import FlowTrigger, FlowTriggerType, TriggerReference


def insert_flow_triggers(session: Session, triggers: list[FlowTrigger], now: datetime) -> None:
    """Insert triggers so that, within a workspace, positions increase in commit order.

    PostgreSQL hands out sequence values before commit, so two transactions can commit their
    positions out of order and a reader could skip the lower one. A transaction-scoped advisory
    lock per workspace, taken right before the insert and held until commit, makes position order
    and commit order the same. SQLite runs one write transaction at a time, which has that effect.
    """
    if not triggers:
        return
    if session.get_bind().dialect.name == "postgresql":
        for workspace_id in sorted({trigger.workspace_id for trigger in triggers}):
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _outbox_lock_key(workspace_id)})
    session.connection().execute(
        insert(_FLOW_TRIGGERS),
        [
            {
                "id": trigger.id,
                "workspace_id": trigger.workspace_id,
                "trigger_type": trigger.trigger_type.value,
                "ordering_key": trigger.ordering_key,
                "subject_id": trigger.subject_id,
                "payload": trigger.payload,
                "occurred_at": trigger.occurred_at,
                "created_at": now,
            }
            for trigger in triggers
        ],
    )


_FLOW_TRIGGERS = cast(Table, FlowTriggerRow.__table__)


def triggers_of_subjects(
    session: Session, workspace_id: uuid.UUID, subject_ids: list[uuid.UUID]
) -> list[TriggerReference]:
    """Return the triggers that events produced, retractions left out."""
    if not subject_ids:
        return []
    rows = session.execute(
        select(
            FlowTriggerRow.id, FlowTriggerRow.position, FlowTriggerRow.trigger_type, FlowTriggerRow.subject_id
        ).where(
            FlowTriggerRow.workspace_id == workspace_id,
            FlowTriggerRow.subject_id.in_(subject_ids),
            FlowTriggerRow.trigger_type != FlowTriggerType.TRIGGER_RETRACTED.value,
        )
    )
    return [TriggerReference(row.id, row.position, FlowTriggerType(row.trigger_type), row.subject_id) for row in rows]


def _outbox_lock_key(workspace_id: uuid.UUID) -> int:
    digest = hashlib.sha256(f"flow-triggers:{workspace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
