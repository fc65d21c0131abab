"""The events of one contact on one message while a batch records more of them."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Collection
from datetime import datetime

from server.domain.classification import EmailEventType
from server.domain.email_events import EmailEvent, EventVerdict
from server.domain.engagement import EngagementCounterKey, TallyKey, tally_counter_deltas, tally_key
from server.usecases.ports import MessageKey, StoredHistory


class MessageHistory:
    """The stored events of one message key that rules read, plus the current batch's events and changes.

    Rules read the current state, so an event recorded earlier in the same batch counts
    exactly like one stored by an earlier transaction. Recorded opens and distant bot clicks
    are not loaded (see StoredHistory), so the rules below read only deliveries, inferred
    opens, human clicks and the clicks near the batch's own clicks.
    """

    def __init__(self, key: MessageKey, stored: StoredHistory) -> None:
        self.key = key
        self.stored = tuple(stored.events)
        self._stored_tally = stored.tally
        self._has_recorded_human_open = stored.has_recorded_human_open
        self._events: dict[uuid.UUID, EmailEvent] = {event.id: event for event in stored.events}
        self._stored_by_id = dict(self._events)
        self._created: list[uuid.UUID] = []

    def delivery_time(self) -> datetime | None:
        """Return the time of the earliest DELIVERED event."""
        return min(
            (event.occurred_at for event in self._events.values() if event.event_type is EmailEventType.DELIVERED),
            default=None,
        )

    def clicks_between(self, start: datetime, end: datetime) -> list[EmailEvent]:
        """Return the clicks that occurred from `start` to `end`, both included."""
        return [
            event
            for event in self._events.values()
            if event.event_type is EmailEventType.CLICKED and start <= event.occurred_at <= end
        ]

    def add(self, event: EmailEvent) -> None:
        self._events[event.id] = event
        self._created.append(event.id)

    def mark_clicks_as_bots(self, click_ids: Collection[uuid.UUID], verdict: EventVerdict) -> list[EmailEvent]:
        """Give the still-human clicks among `click_ids`, and their inferred opens, the verdict.

        Returns the changed events, oldest first.
        """
        changed = [
            dataclasses.replace(event, verdict=verdict)
            for event in self._events.values()
            if not event.verdict.is_bot and (event.id in click_ids or event.inferred_from_event_id in click_ids)
        ]
        for event in changed:
            self._events[event.id] = event
        return sorted(changed, key=lambda event: (event.occurred_at, event.id))

    def has_human_open(self) -> bool:
        if self._has_recorded_human_open:
            return True
        return any(
            event.event_type is EmailEventType.OPENED and not event.verdict.is_bot for event in self._events.values()
        )

    def earliest_human_click(self) -> EmailEvent | None:
        clicks = [
            event
            for event in self._events.values()
            if event.event_type is EmailEventType.CLICKED and not event.verdict.is_bot
        ]
        return min(clicks, key=lambda event: (event.occurred_at, event.id), default=None)

    def created_events(self) -> list[EmailEvent]:
        """Return the events of this batch with their current verdicts, in the order they were added."""
        return [self._events[event_id] for event_id in self._created]

    def reclassified_stored_events(self) -> list[EmailEvent]:
        """Return stored events whose verdict this batch changed."""
        return [self._events[event.id] for event in self.stored if self._events[event.id].verdict != event.verdict]

    def tally(self) -> Counter[TallyKey]:
        """Count every event of the message key, stored or of this batch, with its current verdict."""
        after = Counter(self._stored_tally)
        for event in self.reclassified_stored_events():
            after[tally_key(self._stored_by_id[event.id])] -= 1
            after[tally_key(event)] += 1
        after.update(tally_key(event) for event in self.created_events())
        return +after

    def has_recorded_human_open(self) -> bool:
        """Tell whether a recorded (not inferred) human open is stored or part of this batch."""
        return self._has_recorded_human_open or any(
            event.event_type is EmailEventType.OPENED and not event.inferred and not event.verdict.is_bot
            for event in self.created_events()
        )

    def counter_deltas(self) -> dict[EngagementCounterKey, int]:
        """Return the engagement counter changes that this batch's events and verdict changes make."""
        return tally_counter_deltas(self.key.workspace_id, self.key.message_id, self._stored_tally, self.tally())
