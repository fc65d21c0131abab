"""Storage ports that the use cases depend on; the database adapter implements them."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.domain.api_keys import ApiKeyMode
from server.domain.contacts import Contact, EmailAddress
from server.domain.email_events import EmailEvent
from server.domain.engagement import (
    EmailEventQuery,
    EngagementCounterKey,
    EngagementCounts,
    EngagementScope,
    TallyKey,
)
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


class ContactLookup(Protocol):
    """Finds many contacts of one workspace with one query each."""

    def contacts_by_id(
        self, workspace_id: uuid.UUID, contact_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, Contact]: ...

    def contacts_by_lookup_key(self, workspace_id: uuid.UUID, lookup_keys: Collection[str]) -> dict[str, Contact]: ...


class ProductViewBatch(ContactLookup, Protocol):
    """One transaction that stores a batch of product views; writes reach the database at commit."""

    def product_views_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_keys: Collection[str]
    ) -> dict[str, ProductView]: ...

    def add_product_views(self, views: Sequence[ProductView], triggers: Sequence[FlowTrigger]) -> None: ...


class ProductViewStore(Protocol):
    def product_view_batch(self) -> AbstractContextManager[ProductViewBatch]:
        """Open a batch transaction that commits on a clean exit and rolls back on an exception.

        Raises IdempotencyKeyTaken on exit when a concurrent transaction stored one of the
        batch's idempotency keys first, and StorageUnavailable when the database fails.
        """
        ...

    def list_product_views(self, query: ProductViewQuery) -> list[ProductView]: ...


@dataclass(frozen=True, slots=True, order=True)
class MessageKey:
    """One contact's copy of one message: the events that the e-mail event rules read together."""

    workspace_id: uuid.UUID
    message_id: str
    contact_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """What a batch reads of the stored events of one message key.

    Opens that were recorded, not inferred, and bot clicks far from the batch's clicks are only
    counted, so that a message opened or clicked thousands of times costs a batch little.
    """

    events: list[EmailEvent]
    # Every stored event, counted by the fields that engagement counters depend on.
    tally: Counter[TallyKey]
    # Whether a recorded (not inferred) human open exists; such an open never changes its verdict.
    has_recorded_human_open: bool


class EmailEventBatch(ContactLookup, Protocol):
    """One transaction that records a batch of e-mail events.

    Reads run at once. Writes are staged and reach the database when the batch commits, so
    that the adapter can order its inserts and locks the same way in every transaction.
    """

    def email_events_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_keys: Collection[str]
    ) -> dict[str, EmailEvent]: ...

    def lock_message_histories(
        self, keys: Sequence[MessageKey], click_windows: Mapping[MessageKey, tuple[datetime, datetime]]
    ) -> dict[MessageKey, StoredHistory]:
        """Lock the events of each message key until commit and return what the rules read of them.

        That is every delivery, inferred open and human click, and the bot clicks that occurred
        within the key's click window, oldest first, plus counts of all stored events.
        """
        ...

    def triggers_of_events(self, workspace_id: uuid.UUID, event_ids: Collection[uuid.UUID]) -> list[TriggerReference]:
        """Return the stored triggers that the events produced, retractions left out."""
        ...

    def add_events(self, events: Sequence[EmailEvent]) -> None: ...

    def update_verdicts(self, events: Sequence[EmailEvent]) -> None:
        """Store the current verdict of stored events that were classified again."""
        ...

    def add_to_engagement_counters(self, deltas: Mapping[EngagementCounterKey, int]) -> None: ...

    def update_message_tallies(self, tallies: Mapping[MessageKey, tuple[Counter[TallyKey], bool]]) -> None:
        """Store each message key's new event counts and whether it has a recorded human open."""
        ...

    def add_triggers(self, triggers: Sequence[FlowTrigger], now: datetime) -> None: ...


class EmailEventStore(Protocol):
    def email_event_batch(self) -> AbstractContextManager[EmailEventBatch]:
        """Open a batch transaction that commits on a clean exit and rolls back on an exception.

        Raises IdempotencyKeyTaken on exit when a concurrent transaction stored one of the
        batch's idempotency keys first, and StorageUnavailable when the database fails.
        """
        ...

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
