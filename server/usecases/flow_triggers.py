"""Reading the flow-trigger feed, consumer-group acknowledgements and retention."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from server.domain.errors import FieldViolation, ValidationFailed
from server.domain.flow_triggers import (
    FlowTriggerType,
    StoredFlowTrigger,
    check_consumer_group,
    check_cursor,
)
from server.domain.validation import Violations
from server.usecases.ports import Clock, FlowTriggerStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FeedStart:
    """Start position of a stream and the trigger types it carries (empty: all)."""

    after_position: int
    trigger_types: frozenset[FlowTriggerType]


class FlowTriggerFeed:
    """The ordered, resumable feed of a workspace's flow triggers."""

    def __init__(self, triggers: FlowTriggerStore, clock: Clock) -> None:
        self._triggers = triggers
        self._clock = clock

    def start(
        self,
        workspace_id: uuid.UUID,
        *,
        consumer_group: str,
        cursor: str,
        trigger_types: list[FlowTriggerType | None],
    ) -> FeedStart:
        """Validate a stream request; without a cursor, start after the group's acknowledged position."""
        violations = Violations()
        group = check_consumer_group(violations, "consumer_group", consumer_group, required=False)
        after = check_cursor(violations, "cursor", cursor)
        if any(kind is None for kind in trigger_types):
            violations.add("trigger_types", "contains an unknown trigger type")
        violations.raise_if_any()
        assert after is not None

        if after == 0 and group is not None:
            after = self._triggers.acknowledged_position(workspace_id, group) or 0
        known_types = frozenset(kind for kind in trigger_types if kind is not None)
        return FeedStart(after_position=after, trigger_types=known_types)

    def read(self, workspace_id: uuid.UUID, start: FeedStart, limit: int) -> list[StoredFlowTrigger]:
        return self._triggers.read_flow_triggers(workspace_id, start.after_position, start.trigger_types, limit)

    def acknowledge(self, workspace_id: uuid.UUID, *, consumer_group: str, cursor: str) -> int:
        """Store a group's cursor and return the group's cursor afterwards, which never moves back."""
        violations = Violations()
        group = check_consumer_group(violations, "consumer_group", consumer_group, required=True)
        if not cursor:
            violations.add("cursor", "is required")
        position = check_cursor(violations, "cursor", cursor)
        violations.raise_if_any()
        assert group is not None
        assert position is not None

        newest = self._triggers.newest_position(workspace_id)
        if position > newest:
            raise ValidationFailed(
                [FieldViolation("cursor", f"is beyond the newest trigger, whose cursor is {newest}")]
            )
        return self._triggers.acknowledge(workspace_id, group, position, self._clock())

    def prune(self, retention: timedelta) -> dict[uuid.UUID, int]:
        """Delete triggers older than `retention` that every consumer group has acknowledged."""
        removed = self._triggers.prune_flow_triggers(self._clock() - retention)
        for workspace_id, count in removed.items():
            logger.info("flow triggers pruned", extra={"workspace_id": str(workspace_id), "triggers": count})
        return removed
