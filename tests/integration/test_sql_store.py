"""SqlStore against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from server.adapters.database.email_event_store import SqlEmailEventStore
from server.adapters.database.engine import create_database_engine
from server.adapters.database.repository import SqlStore
from server.adapters.database.schema import ProductViewRow
from server.domain.contacts import EmailAddress
from server.domain.errors import ContactAlreadyExists, StorageUnavailable
from server.domain.flow_triggers import FlowTrigger, product_viewed_trigger
from server.domain.money import Price
from server.domain.product_views import ProductDetails, ProductView
from server.usecases.ports import IdempotencyKeyTaken

NOW = datetime(2026, 12, 4, 12, 30, 15, 123456, tzinfo=UTC)


def new_view(
    workspace_id: uuid.UUID, contact_id: uuid.UUID, amount: str = "99.99", key: str | None = None
) -> ProductView:
    product = ProductDetails(
        product_id="prod_abc123",
        product_name="Premium Wireless Headphones",
        product_url="https://shop.example.com/products/wireless-headphones",
        variant_id=None,
        image_url=None,
        price=Price(Decimal(amount), "USD"),
        category=None,
        brand=None,
        sku=None,
        session_id=None,
    )
    return ProductView(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        contact_id=contact_id,
        product=product,
        viewed_at=NOW,
        idempotency_key=key,
        request_fingerprint="f" * 64,
    )


@pytest.fixture
def store(database_engine: Engine) -> SqlStore:
    return SqlStore(database_engine)


@pytest.fixture
def workspace_and_contact(store: SqlStore) -> tuple[uuid.UUID, uuid.UUID]:
    workspace = store.add_workspace(f"ws-{uuid.uuid4().hex[:10]}", NOW)
    contact = store.add_contact(workspace.id, EmailAddress("a@example.com", "a@example.com"), NOW)
    return workspace.id, contact.id


def add_view(store: SqlStore, view: ProductView, trigger: FlowTrigger) -> None:
    with store.product_view_batch() as batch:
        batch.add_product_views([view], [trigger])


def find_view(store: SqlStore, workspace_id: uuid.UUID, idempotency_key: str) -> ProductView | None:
    with store.product_view_batch() as batch:
        return batch.product_views_by_idempotency_key(workspace_id, {idempotency_key}).get(idempotency_key)


def count_views(engine: Engine, view_id: uuid.UUID) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).where(ProductViewRow.id == view_id)) or 0)


def test_view_round_trips_exactly(store: SqlStore, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]) -> None:
    workspace_id, contact_id = workspace_and_contact
    view = new_view(workspace_id, contact_id, amount="0.000000001", key="round-trip")

    add_view(store, view, product_viewed_trigger(view))
    loaded = find_view(store, workspace_id, "round-trip")

    assert loaded == view
    assert loaded is not None
    assert loaded.viewed_at.tzinfo is not None


def test_view_without_trigger_is_not_stored(
    store: SqlStore, database_engine: Engine, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]
) -> None:
    workspace_id, contact_id = workspace_and_contact
    first = new_view(workspace_id, contact_id)
    first_trigger = product_viewed_trigger(first)
    add_view(store, first, first_trigger)
    second = new_view(workspace_id, contact_id)
    # A trigger whose id is taken makes the trigger insert fail after the view insert succeeded.
    clashing_trigger = dataclasses.replace(product_viewed_trigger(second), id=first_trigger.id)

    with pytest.raises(IntegrityError):
        add_view(store, second, clashing_trigger)

    assert count_views(database_engine, second.id) == 0
    assert count_views(database_engine, first.id) == 1


def test_duplicate_contact_reports_existing_id(
    store: SqlStore, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]
) -> None:
    workspace_id, contact_id = workspace_and_contact

    with pytest.raises(ContactAlreadyExists) as caught:
        store.add_contact(workspace_id, EmailAddress("A@example.com", "a@example.com"), NOW)

    assert caught.value.existing_contact_id == str(contact_id)


def test_times_are_stored_in_utc(store: SqlStore, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]) -> None:
    workspace_id, contact_id = workspace_and_contact
    view = new_view(workspace_id, contact_id, key="tz")
    view = dataclasses.replace(view, viewed_at=NOW.astimezone(timezone(timedelta(hours=5))))

    add_view(store, view, product_viewed_trigger(view))
    loaded = find_view(store, workspace_id, "tz")

    assert loaded is not None
    assert loaded.viewed_at == NOW
    assert loaded.viewed_at.utcoffset() == timedelta(0)


def test_naive_time_is_rejected(store: SqlStore, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]) -> None:
    workspace_id, contact_id = workspace_and_contact
    view = new_view(workspace_id, contact_id)
    view = dataclasses.replace(view, viewed_at=NOW.replace(tzinfo=None))

    with pytest.raises(StatementError, match="naive datetimes"):
        add_view(store, view, product_viewed_trigger(new_view(workspace_id, contact_id)))


def test_batch_with_taken_key_is_idempotency_key_taken(
    store: SqlStore, database_engine: Engine, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]
) -> None:
    workspace_id, contact_id = workspace_and_contact
    first = new_view(workspace_id, contact_id, key="taken")
    add_view(store, first, product_viewed_trigger(first))
    unrelated = new_view(workspace_id, contact_id, key="free")
    clashing = new_view(workspace_id, contact_id, key="taken")

    with pytest.raises(IdempotencyKeyTaken), store.product_view_batch() as batch:
        batch.add_product_views(
            [unrelated, clashing], [product_viewed_trigger(unrelated), product_viewed_trigger(clashing)]
        )

    assert count_views(database_engine, unrelated.id) == 0
    assert count_views(database_engine, clashing.id) == 0


def test_contacts_found_in_bulk(store: SqlStore, workspace_and_contact: tuple[uuid.UUID, uuid.UUID]) -> None:
    workspace_id, contact_id = workspace_and_contact
    other_workspace = store.add_workspace(f"ws-{uuid.uuid4().hex[:10]}", NOW)
    stranger = store.add_contact(other_workspace.id, EmailAddress("b@example.com", "b@example.com"), NOW)

    with store.product_view_batch() as batch:
        by_id = batch.contacts_by_id(workspace_id, {contact_id, stranger.id, uuid.uuid4()})
        by_key = batch.contacts_by_lookup_key(workspace_id, {"a@example.com", "b@example.com"})

    assert list(by_id) == [contact_id]
    assert list(by_key) == ["a@example.com"]
    assert by_key["a@example.com"].id == contact_id


def test_unreachable_database_is_storage_unavailable() -> None:
    engine = create_database_engine("postgresql://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(StorageUnavailable):
            SqlStore(engine).find_workspace_by_name("x")
    finally:
        engine.dispose()


def test_read_only_database_is_storage_unavailable(database_url: str) -> None:
    engine = create_database_engine(database_url)

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        # A PostgreSQL standby during failover, or a read-only SQLite file, rejects writes like this.
        cursor = dbapi_connection.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET default_transaction_read_only = on")
            dbapi_connection.commit()
        else:
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()

    try:
        with pytest.raises(StorageUnavailable):
            SqlStore(engine).add_workspace(f"ro-{uuid.uuid4().hex[:8]}", NOW)
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_lost_connection_mid_batch_is_storage_unavailable(database_engine: Engine) -> None:
    # The recorder fails only the current event for most errors raised while it records one, so
    # a lost connection must surface right there as StorageUnavailable, which fails the batch.
    store = SqlEmailEventStore(SqlStore(database_engine))
    raised: Exception | None = None

    try:
        with store.email_event_batch() as batch:
            backend = batch._connection.scalar(text("SELECT pg_backend_pid()"))
            with database_engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            try:
                batch.triggers_of_events(uuid.uuid4(), [uuid.uuid4()])
            except Exception as error:
                raised = error
                raise
    except StorageUnavailable:
        pass

    assert isinstance(raised, StorageUnavailable)
