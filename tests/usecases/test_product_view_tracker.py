"""ProductViewTracker and ContactDirectory with hand-written in-memory stores."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from server.domain.contacts import Contact, EmailAddress
from server.domain.errors import ContactMismatch, ContactNotFound, IdempotencyKeyReused
from server.domain.flow_triggers import FlowTrigger
from server.domain.product_views import ProductView, ProductViewInput, ProductViewQuery
from server.usecases.contacts import ContactDirectory
from server.usecases.ports import IdempotencyKeyTaken
from server.usecases.product_views import ProductViewTracker

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
WORKSPACE = uuid.uuid4()


class InMemoryContacts:
    def __init__(self) -> None:
        self.contacts: list[Contact] = []
        self.lookup_keys: dict[uuid.UUID, str] = {}

    def add_contact(self, workspace_id: uuid.UUID, email: EmailAddress, now: datetime) -> Contact:
        contact = Contact(id=uuid.uuid4(), workspace_id=workspace_id, email=email.address, created_at=now)
        self.contacts.append(contact)
        self.lookup_keys[contact.id] = email.lookup_key
        return contact

    def find_contact_by_id(self, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> Contact | None:
        return next((c for c in self.contacts if c.workspace_id == workspace_id and c.id == contact_id), None)

    def find_contact_by_email(self, workspace_id: uuid.UUID, lookup_key: str) -> Contact | None:
        return next(
            (c for c in self.contacts if c.workspace_id == workspace_id and self.lookup_keys[c.id] == lookup_key), None
        )


class InMemoryViews:
    """Stores views; `race_winner` simulates a concurrent call that stored the same key first."""

    def __init__(self) -> None:
        self.views: list[ProductView] = []
        self.triggers: list[FlowTrigger] = []
        self.race_winner: ProductView | None = None

    def add_product_view(self, view: ProductView, trigger: FlowTrigger) -> None:
        if self.race_winner is not None:
            self.views.append(self.race_winner)
            self.race_winner = None
            raise IdempotencyKeyTaken()
        self.views.append(view)
        self.triggers.append(trigger)

    def list_product_views(self, query: ProductViewQuery) -> list[ProductView]:
        views = [v for v in self.views if v.workspace_id == query.workspace_id and v.contact_id == query.contact_id]
        return sorted(views, key=lambda view: (view.viewed_at, view.id), reverse=True)[: query.limit]

    def find_product_view_by_idempotency_key(self, workspace_id: uuid.UUID, idempotency_key: str) -> ProductView | None:
        return next(
            (v for v in self.views if v.workspace_id == workspace_id and v.idempotency_key == idempotency_key), None
        )


@pytest.fixture
def contacts() -> InMemoryContacts:
    return InMemoryContacts()


@pytest.fixture
def views() -> InMemoryViews:
    return InMemoryViews()


@pytest.fixture
def tracker(contacts: InMemoryContacts, views: InMemoryViews) -> ProductViewTracker:
    return ProductViewTracker(ContactDirectory(contacts, lambda: NOW), views, lambda: NOW)


def request(**overrides: Any) -> ProductViewInput:
    example = ProductViewInput(
        email="shopper@example.com",
        product_id="prod_abc123",
        product_name="Premium Wireless Headphones",
        product_url="https://shop.example.com/products/wireless-headphones",
    )
    return dataclasses.replace(example, **overrides)


def add_shopper(contacts: InMemoryContacts, email: str = "shopper@example.com") -> Contact:
    return contacts.add_contact(WORKSPACE, EmailAddress(email, email.lower()), NOW)


def test_view_and_trigger_stored(tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews) -> None:
    shopper = add_shopper(contacts)

    view = tracker.track(WORKSPACE, request())

    assert view.contact_id == shopper.id
    assert view.viewed_at == NOW
    assert views.views == [view]
    assert [trigger.subject_id for trigger in views.triggers] == [view.id]
    assert views.triggers[0].ordering_key == str(shopper.id)


def test_contact_of_other_workspace_not_found(tracker: ProductViewTracker, contacts: InMemoryContacts) -> None:
    contacts.add_contact(uuid.uuid4(), EmailAddress("shopper@example.com", "shopper@example.com"), NOW)

    with pytest.raises(ContactNotFound):
        tracker.track(WORKSPACE, request())


def test_mismatched_reference_rejected(tracker: ProductViewTracker, contacts: InMemoryContacts) -> None:
    add_shopper(contacts)
    other = add_shopper(contacts, "other@example.com")

    with pytest.raises(ContactMismatch):
        tracker.track(WORKSPACE, request(contact_id=str(other.id)))


def test_retry_returns_first_view(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)

    first = tracker.track(WORKSPACE, request(idempotency_key="k"))
    second = tracker.track(WORKSPACE, request(idempotency_key="k"))

    assert second == first
    assert len(views.views) == 1
    assert len(views.triggers) == 1


def test_lost_race_returns_winner(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)
    winner = tracker.track(WORKSPACE, request(idempotency_key="race"))
    views.views.clear()
    views.race_winner = winner

    result = tracker.track(WORKSPACE, request(idempotency_key="race"))

    assert result == winner


def test_lost_race_with_other_content_fails(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)
    winner = tracker.track(WORKSPACE, request(idempotency_key="race"))
    views.views.clear()
    views.race_winner = winner

    with pytest.raises(IdempotencyKeyReused):
        tracker.track(WORKSPACE, request(idempotency_key="race", product_id="other"))
