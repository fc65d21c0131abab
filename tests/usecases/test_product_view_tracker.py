"""ProductViewTracker and ContactDirectory with hand-written in-memory stores."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
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


class InMemoryViewBatch:
    """One batch: reads see committed views, writes are kept until the batch commits."""

    def __init__(self, contacts: InMemoryContacts, views: InMemoryViews) -> None:
        self._contacts = contacts
        self._views = views
        self.staged_views: list[ProductView] = []
        self.staged_triggers: list[FlowTrigger] = []

    def contacts_by_id(self, workspace_id: uuid.UUID, contact_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Contact]:
        found = (self._contacts.find_contact_by_id(workspace_id, contact_id) for contact_id in contact_ids)
        return {contact.id: contact for contact in found if contact is not None}

    def contacts_by_lookup_key(self, workspace_id: uuid.UUID, lookup_keys: Collection[str]) -> dict[str, Contact]:
        found = {key: self._contacts.find_contact_by_email(workspace_id, key) for key in lookup_keys}
        return {key: contact for key, contact in found.items() if contact is not None}

    def product_views_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_keys: Collection[str]
    ) -> dict[str, ProductView]:
        found: dict[str, ProductView] = {}
        for view in self._views.views:
            if view.workspace_id == workspace_id and view.idempotency_key in idempotency_keys:
                assert view.idempotency_key is not None
                found[view.idempotency_key] = view
        return found

    def add_product_views(self, views: Sequence[ProductView], triggers: Sequence[FlowTrigger]) -> None:
        self.staged_views += views
        self.staged_triggers += triggers


class InMemoryViews:
    """Stores views per batch.

    `race_winner` simulates a concurrent call that stored the same key first: the next
    commit stores it and raises IdempotencyKeyTaken. `failing_product_id` makes every
    commit that contains a view of that product fail, as a database would reject a row.
    """

    def __init__(self, contacts: InMemoryContacts) -> None:
        self._contacts = contacts
        self.views: list[ProductView] = []
        self.triggers: list[FlowTrigger] = []
        self.race_winner: ProductView | None = None
        self.failing_product_id: str | None = None
        self.commits = 0

    @contextmanager
    def product_view_batch(self) -> Iterator[InMemoryViewBatch]:
        batch = InMemoryViewBatch(self._contacts, self)
        yield batch
        if self.race_winner is not None:
            self.views.append(self.race_winner)
            self.race_winner = None
            raise IdempotencyKeyTaken()
        if any(view.product.product_id == self.failing_product_id for view in batch.staged_views):
            raise RuntimeError("row rejected")
        self.views += batch.staged_views
        self.triggers += batch.staged_triggers
        self.commits += 1

    def list_product_views(self, query: ProductViewQuery) -> list[ProductView]:
        views = [v for v in self.views if v.workspace_id == query.workspace_id and v.contact_id == query.contact_id]
        return sorted(views, key=lambda view: (view.viewed_at, view.id), reverse=True)[: query.limit]


@pytest.fixture
def contacts() -> InMemoryContacts:
    return InMemoryContacts()


@pytest.fixture
def views(contacts: InMemoryContacts) -> InMemoryViews:
    return InMemoryViews(contacts)


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


def test_batch_stored_in_one_commit(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)
    batch = [tracker.prepare(WORKSPACE, request(product_id=f"p{index}")) for index in range(3)]

    outcomes = tracker.track_batch(batch)

    assert [outcome.product.product_id for outcome in outcomes if isinstance(outcome, ProductView)] == [
        "p0",
        "p1",
        "p2",
    ]
    assert views.commits == 1
    assert len(views.triggers) == 3


def test_unknown_contact_fails_only_its_view(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)
    batch = [
        tracker.prepare(WORKSPACE, request()),
        tracker.prepare(WORKSPACE, request(email="nobody@example.com")),
        tracker.prepare(WORKSPACE, request()),
    ]

    outcomes = tracker.track_batch(batch)

    assert isinstance(outcomes[0], ProductView)
    assert isinstance(outcomes[1], ContactNotFound)
    assert isinstance(outcomes[2], ProductView)
    assert len(views.views) == 2


def test_same_key_twice_in_batch_stores_once(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)
    batch = [
        tracker.prepare(WORKSPACE, request(idempotency_key="twice")),
        tracker.prepare(WORKSPACE, request(idempotency_key="twice")),
        tracker.prepare(WORKSPACE, request(idempotency_key="twice", product_id="other")),
    ]

    outcomes = tracker.track_batch(batch)

    assert outcomes[1] == outcomes[0]
    assert isinstance(outcomes[2], IdempotencyKeyReused)
    assert len(views.views) == 1


def test_rejected_batch_is_stored_view_by_view(
    tracker: ProductViewTracker, contacts: InMemoryContacts, views: InMemoryViews
) -> None:
    add_shopper(contacts)
    views.failing_product_id = "bad"
    batch = [tracker.prepare(WORKSPACE, request(product_id=product_id)) for product_id in ("a", "bad", "c")]

    outcomes = tracker.track_batch(batch)

    assert isinstance(outcomes[0], ProductView)
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[2], ProductView)
    assert [view.product.product_id for view in views.views] == ["a", "c"]
