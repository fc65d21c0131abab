"""Storage ports that the use cases depend on; the database adapter implements them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.domain.api_keys import ApiKeyMode
from server.domain.contacts import Contact, EmailAddress
from server.domain.email_events import EmailEvent, EventVerdict
from server.domain.engagement import EmailEventQuery, EngagementCounts, EngagementScope
from server.domain.flow_triggers import FlowTrigger, FlowTriggerType, StoredFlowTrigger, TriggerReference
from server.domain.product_views import ProductView, ProductViewQuery

Clock = Callable[[], datetime]


class IdempotencyKeyTaken(Exception):
    """A concurrent call stored a record under the same idempotency key first."""


@dataclass(frozen=True, slots=True)
class Workspace:
    """A tenant: every contact, view and key belongs to exactly one workspace."""

    id: uuid.UUID
    name: str
    created_at: datetime


class WorkspaceStore(Protocol):
    def add_workspace(self, name: str, now: datetime) -> Workspace: ...

    def find_workspace_by_name(self, name: str) -> Workspace | None: ...

    def add_api_key(
        self, workspace_id: uuid.UUID, key_hash: str, key_prefix: str, mode: ApiKeyMode, now: datetime
    ) -> None: ...

    def find_workspace_id_by_key_hash(self, key_hash: str) -> uuid.UUID | None: ...


class ContactStore(Protocol):
    def add_contact(self, workspace_id: uuid.UUID, email: EmailAddress, now: datetime) -> Contact:
        """Store a new contact; raise ContactAlreadyExists when the address is taken."""
        ...

    def find_contact_by_id(self, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> Contact | None: ...

    def find_contact_by_email(self, workspace_id: uuid.UUID, lookup_key: str) -> Contact | None: ...


class ProductViewStore(Protocol):
    def add_product_view(self, view: ProductView, trigger: FlowTrigger) -> None:
        """Store the view and its trigger in one transaction; raise IdempotencyKeyTaken on a key race."""
        ...

    def find_product_view_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_key: str
    ) -> ProductView | None: ...

    def list_product_views(self, query: ProductViewQuery) -> list[ProductView]: ...


@dataclass(frozen=True, slots=True)
class StoredClick:
    """A click of the contact on the message, as classification history."""

    id: uuid.UUID
    occurred_at: datetime
    is_bot: bool


class MessageEventsTransaction(Protocol):
    """The events of one contact on one message, read and changed under one lock and transaction."""

    def delivery_time(self) -> datetime | None:
        """Return the time of the earliest stored DELIVERED event."""
        ...

    def clicks_between(self, start: datetime, end: datetime) -> list[StoredClick]: ...

    def add_event(self, event: EmailEvent) -> None: ...

    def mark_clicks_as_bots(self, click_ids: list[uuid.UUID], verdict: EventVerdict) -> list[EmailEvent]:
        """Give the still-human clicks among `click_ids`, and their inferred opens, the verdict.

        Returns the changed events.
        """
        ...

    def add_triggers(self, triggers: list[FlowTrigger], now: datetime) -> None:
        """Store flow triggers in this transaction, after the events they come from."""
        ...

    def triggers_of_events(self, event_ids: list[uuid.UUID]) -> list[TriggerReference]: ...

    def has_human_open(self) -> bool: ...

    def earliest_human_click(self) -> EmailEvent | None: ...


class EmailEventStore(Protocol):
    def message_events(
        self, workspace_id: uuid.UUID, contact_id: uuid.UUID, message_id: str
    ) -> AbstractContextManager[MessageEventsTransaction]:
        """Lock the contact's events on the message and commit on exit.

        Raises IdempotencyKeyTaken on exit when a concurrent call stored the same key first.
        """
        ...

    def find_email_event_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_key: str
    ) -> EmailEvent | None: ...

    def list_email_events(self, query: EmailEventQuery) -> list[EmailEvent]: ...

    def count_engagement(self, workspace_id: uuid.UUID, scope: EngagementScope) -> EngagementCounts: ...


class FlowTriggerStore(Protocol):
    def read_flow_triggers(
        self, workspace_id: uuid.UUID, after_position: int, trigger_types: frozenset[FlowTriggerType], limit: int
    ) -> list[StoredFlowTrigger]: ...

    def acknowledged_position(self, workspace_id: uuid.UUID, consumer_group: str) -> int | None: ...

    def newest_position(self, workspace_id: uuid.UUID) -> int: ...

    def acknowledge(self, workspace_id: uuid.UUID, consumer_group: str, position: int, now: datetime) -> int: ...

    def prune_flow_triggers(self, created_before: datetime) -> dict[uuid.UUID, int]: ...
