"""The SQL implementation of the storage ports, for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Select, Table, and_, func, insert, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from server.adapters.database.outbox import insert_flow_triggers
from server.adapters.database.schema import ApiKeyRow, ContactRow, ProductViewRow, WorkspaceRow
from server.domain.api_keys import ApiKeyMode
from server.domain.contacts import Contact, EmailAddress
from server.domain.errors import ContactAlreadyExists, StorageUnavailable
from server.domain.flow_triggers import FlowTrigger
from server.domain.money import Price, normalize_amount
from server.domain.product_views import ProductDetails, ProductView, ProductViewQuery
from server.usecases.ports import IdempotencyKeyTaken, Workspace

logger = logging.getLogger(__name__)


class SqlStore:
    """Implements WorkspaceStore, ContactStore and ProductViewStore over one engine.

    Every method runs in its own transaction. Connection failures and pool timeouts
    become StorageUnavailable so that callers get a retryable status.
    """

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in a transaction; raise StorageUnavailable when the database fails."""
        try:
            with self._sessions.begin() as session:
                yield session
        except (OperationalError, InterfaceError, PoolTimeoutError) as error:
            _log_storage_failure(error)
            raise StorageUnavailable() from error
        except DBAPIError as error:
            if not _is_transient(error):
                raise
            _log_storage_failure(error)
            raise StorageUnavailable() from error

    # Workspaces and API keys

    def add_workspace(self, name: str, now: datetime) -> Workspace:
        workspace = Workspace(id=uuid.uuid4(), name=name, created_at=now)
        with self.transaction() as session:
            session.execute(insert(WorkspaceRow).values(id=workspace.id, name=name, created_at=now))
        return workspace

    def find_workspace_by_name(self, name: str) -> Workspace | None:
        with self.transaction() as session:
            row = session.scalars(select(WorkspaceRow).where(WorkspaceRow.name == name)).one_or_none()
            if row is None:
                return None
            return Workspace(id=row.id, name=row.name, created_at=row.created_at)

    def add_api_key(
        self, workspace_id: uuid.UUID, key_hash: str, key_prefix: str, mode: ApiKeyMode, now: datetime
    ) -> None:
        with self.transaction() as session:
            session.execute(
                insert(ApiKeyRow).values(
                    id=uuid.uuid4(),
                    workspace_id=workspace_id,
                    key_hash=key_hash,
                    key_prefix=key_prefix,
                    mode=mode.value,
                    created_at=now,
                )
            )

    def find_workspace_id_by_key_hash(self, key_hash: str) -> uuid.UUID | None:
        with self.transaction() as session:
            return session.scalars(
                select(ApiKeyRow.workspace_id).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
            ).one_or_none()

    # Contacts

    def add_contact(self, workspace_id: uuid.UUID, email: EmailAddress, now: datetime) -> Contact:
        contact = Contact(id=uuid.uuid4(), workspace_id=workspace_id, email=email.address, created_at=now)
        try:
            with self.transaction() as session:
                session.execute(
                    insert(ContactRow).values(
                        id=contact.id,
                        workspace_id=workspace_id,
                        email=email.address,
                        email_lookup_key=email.lookup_key,
                        created_at=now,
                    )
                )
        except IntegrityError:
            existing = self.find_contact_by_email(workspace_id, email.lookup_key)
            if existing is None:
                raise
            raise ContactAlreadyExists(str(existing.id)) from None
        return contact

    def find_contact_by_id(self, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> Contact | None:
        with self.transaction() as session:
            row = session.scalars(
                select(ContactRow).where(ContactRow.workspace_id == workspace_id, ContactRow.id == contact_id)
            ).one_or_none()
            return _contact_from_row(row) if row is not None else None

    def find_contact_by_email(self, workspace_id: uuid.UUID, lookup_key: str) -> Contact | None:
        with self.transaction() as session:
            row = session.scalars(
                select(ContactRow).where(
                    ContactRow.workspace_id == workspace_id, ContactRow.email_lookup_key == lookup_key
                )
            ).one_or_none()
            return _contact_from_row(row) if row is not None else None

    # Product views

    @contextmanager
    def product_view_batch(self) -> Iterator[SqlProductViewBatch]:
        """Open a batch transaction; the staged views and triggers are inserted right before commit."""
        batch: SqlProductViewBatch | None = None
        try:
            with self.transaction() as session:
                batch = SqlProductViewBatch(session)
                yield batch
                batch.flush()
        except IntegrityError:
            if batch is None or not batch.has_idempotency_keys():
                raise
            raise IdempotencyKeyTaken() from None

    def list_product_views(self, query: ProductViewQuery) -> list[ProductView]:
        """Return a page of a contact's views, newest first; in distinct mode, each product's newest view."""
        conditions = [ProductViewRow.workspace_id == query.workspace_id, ProductViewRow.contact_id == query.contact_id]
        if query.start_time is not None:
            conditions.append(ProductViewRow.viewed_at >= query.start_time)
        if query.end_time is not None:
            conditions.append(ProductViewRow.viewed_at < query.end_time)
        if not query.distinct_products:
            statement = _newest_first(
                select(ProductViewRow).where(*conditions), ProductViewRow.id, ProductViewRow.viewed_at, query
            )
            with self.transaction() as session:
                return [_product_view_from_row(row) for row in session.scalars(statement)]

        # The newest view of each product, then the page over those, both in the database.
        rank = (
            func.row_number()
            .over(
                partition_by=ProductViewRow.product_id,
                order_by=(ProductViewRow.viewed_at.desc(), ProductViewRow.id.desc()),
            )
            .label("rank")
        )
        ranked = select(ProductViewRow.id, ProductViewRow.viewed_at, rank).where(*conditions).subquery()
        newest = _newest_first(select(ranked.c.id).where(ranked.c.rank == 1), ranked.c.id, ranked.c.viewed_at, query)
        with self.transaction() as session:
            ids = list(session.scalars(newest))
            rows = {row.id: row for row in session.scalars(select(ProductViewRow).where(ProductViewRow.id.in_(ids)))}
            return [_product_view_from_row(rows[view_id]) for view_id in ids]


class SqlContactLookup:
    """Implements ContactLookup on an open session."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # Core statements on the session's connection skip the ORM's per-statement work.
        self._connection = session.connection()

    def contacts_by_id(self, workspace_id: uuid.UUID, contact_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Contact]:
        if not contact_ids:
            return {}
        rows = self._connection.execute(
            select(*_CONTACT_COLUMNS).where(ContactRow.workspace_id == workspace_id, ContactRow.id.in_(contact_ids))
        )
        return {row.id: _contact_from_row(row) for row in rows}

    def contacts_by_lookup_key(self, workspace_id: uuid.UUID, lookup_keys: Collection[str]) -> dict[str, Contact]:
        if not lookup_keys:
            return {}
        rows = self._connection.execute(
            select(*_CONTACT_COLUMNS, ContactRow.email_lookup_key).where(
                ContactRow.workspace_id == workspace_id, ContactRow.email_lookup_key.in_(lookup_keys)
            )
        )
        return {row.email_lookup_key: _contact_from_row(row) for row in rows}


class SqlProductViewBatch(SqlContactLookup):
    """Implements ProductViewBatch on an open session; `flush` inserts what was staged."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._views: list[ProductView] = []
        self._triggers: list[FlowTrigger] = []

    def product_views_by_idempotency_key(
        self, workspace_id: uuid.UUID, idempotency_keys: Collection[str]
    ) -> dict[str, ProductView]:
        if not idempotency_keys:
            return {}
        rows = self._connection.execute(
            select(*_PRODUCT_VIEWS.columns).where(
                ProductViewRow.workspace_id == workspace_id, ProductViewRow.idempotency_key.in_(idempotency_keys)
            )
        )
        return {row.idempotency_key: _product_view_from_row(row) for row in rows}

    def add_product_views(self, views: Sequence[ProductView], triggers: Sequence[FlowTrigger]) -> None:
        self._views += views
        self._triggers += triggers

    def has_idempotency_keys(self) -> bool:
        return any(view.idempotency_key is not None for view in self._views)

    def flush(self) -> None:
        if not self._views:
            return
        # Key order: two batches that retry the same keys wait for each other on the unique index
        # in the same order, so they cannot deadlock.
        views = sorted(self._views, key=lambda view: (str(view.workspace_id), view.idempotency_key or ""))
        self._connection.execute(insert(_PRODUCT_VIEWS), [_product_view_values(view) for view in views])
        # Every view of a batch has the same time, which is also when its trigger was created.
        insert_flow_triggers(self._session, self._triggers, self._views[0].viewed_at)


# SQLSTATEs after which a retry can succeed: the standby is read-only during a failover
# (25006), the server is shutting down (57P01 to 57P03), a serialization failure or deadlock
# (40001, 40P01), out of resources (53xxx), and connection failures (08xxx).
_TRANSIENT_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03", "40001", "40P01"})
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53"})


def _is_transient(error: DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES


def _log_storage_failure(error: Exception) -> None:
    # The DBAPI error's own text, because SQLAlchemy's text would include the statement.
    cause = getattr(error, "orig", None) or error
    logger.warning("database call failed", extra={"error": type(cause).__name__, "detail": str(cause)[:200]})


def _newest_first(statement: Select[Any], view_id: Any, viewed_at: Any, query: ProductViewQuery) -> Select[Any]:
    if query.after is not None:
        statement = statement.where(
            or_(
                viewed_at < query.after.occurred_at,
                and_(viewed_at == query.after.occurred_at, view_id < query.after.event_id),
            )
        )
    return statement.order_by(viewed_at.desc(), view_id.desc()).limit(query.limit)


_PRODUCT_VIEWS = cast(Table, ProductViewRow.__table__)
_CONTACT_COLUMNS = (ContactRow.id, ContactRow.workspace_id, ContactRow.email, ContactRow.created_at)


def _product_view_values(view: ProductView) -> dict[str, Any]:
    product = view.product
    return {
        "id": view.id,
        "workspace_id": view.workspace_id,
        "contact_id": view.contact_id,
        "product_id": product.product_id,
        "product_name": product.product_name,
        "product_url": product.product_url,
        "variant_id": product.variant_id,
        "image_url": product.image_url,
        "price_amount": product.price.amount if product.price else None,
        "currency_code": product.price.currency_code if product.price else None,
        "category": product.category,
        "brand": product.brand,
        "sku": product.sku,
        "session_id": product.session_id,
        "viewed_at": view.viewed_at,
        "idempotency_key": view.idempotency_key,
        "request_fingerprint": view.request_fingerprint,
    }


def _contact_from_row(row: Any) -> Contact:
    # `row` is a ContactRow or a Core row with the same column names.
    return Contact(id=row.id, workspace_id=row.workspace_id, email=row.email, created_at=row.created_at)


def _product_view_from_row(row: Any) -> ProductView:
    # `row` is a ProductViewRow or a Core row with the same column names.
    price = None
    if row.price_amount is not None and row.currency_code is not None:
        # PostgreSQL returns NUMERIC(28, 9) with all 9 places; the domain keeps 99.99 as 99.99.
        price = Price(amount=normalize_amount(row.price_amount), currency_code=row.currency_code)
    product = ProductDetails(
        product_id=row.product_id,
        product_name=row.product_name,
        product_url=row.product_url,
        variant_id=row.variant_id,
        image_url=row.image_url,
        price=price,
        category=row.category,
        brand=row.brand,
        sku=row.sku,
        session_id=row.session_id,
    )
    return ProductView(
        id=row.id,
        workspace_id=row.workspace_id,
        contact_id=row.contact_id,
        product=product,
        viewed_at=row.viewed_at,
        idempotency_key=row.idempotency_key,
        request_fingerprint=row.request_fingerprint,
    )
