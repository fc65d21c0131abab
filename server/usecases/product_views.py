"""Tracking product views, with idempotent retries and a flow trigger per stored view."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from server.domain.engagement import PagePosition, decode_page_token, encode_page_token
from server.domain.errors import FieldViolation, IdempotencyKeyReused, StorageUnavailable, ValidationFailed
from server.domain.flow_triggers import product_viewed_trigger
from server.domain.product_views import (
    ProductView,
    ProductViewInput,
    ProductViewListInput,
    ProductViewQuery,
    ValidProductViewRequest,
    fingerprint_product_view,
    validate_product_view,
    validate_product_view_listing,
)
from server.usecases.contacts import ContactDirectory, resolve_contacts
from server.usecases.ports import Clock, IdempotencyKeyTaken, ProductViewBatch, ProductViewStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingProductView:
    """A validated product view of a workspace, waiting for its batch."""

    workspace_id: uuid.UUID
    view: ValidProductViewRequest


class ProductViewTracker:
    """Stores product views for known contacts, in batches of one transaction each."""

    def __init__(self, contacts: ContactDirectory, views: ProductViewStore, clock: Clock) -> None:
        self._contacts = contacts
        self._views = views
        self._clock = clock

    def prepare(self, workspace_id: uuid.UUID, request: ProductViewInput) -> PendingProductView:
        """Validate one request; raise ValidationFailed listing every invalid field."""
        return PendingProductView(workspace_id, validate_product_view(request))

    def track(self, workspace_id: uuid.UUID, request: ProductViewInput) -> ProductView:
        """Validate, resolve the contact, and store the view with its trigger.

        A request with an idempotency key that was already used returns the stored view
        when the content is the same and raises IdempotencyKeyReused when it differs.
        """
        [outcome] = self.track_batch([self.prepare(workspace_id, request)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def track_batch(self, batch: Sequence[PendingProductView]) -> list[ProductView | Exception]:
        """Store a batch of views in one transaction and return each view's outcome in its place.

        When the database rejects the batch, each view is stored again in a transaction of
        its own, so only the offending view fails. Raises StorageUnavailable when the
        database fails, because then nothing of the batch is stored.
        """
        try:
            return self._track_in_one_transaction(batch)
        except StorageUnavailable:
            raise
        except IdempotencyKeyTaken:
            if len(batch) > 1:
                return [outcome for pending in batch for outcome in self.track_batch([pending])]
            # A concurrent transaction stored the key first; this run replays its view.
            logger.info(
                "concurrent retry stored the product view first",
                extra={"workspace_id": str(batch[0].workspace_id), "idempotency_key": batch[0].view.idempotency_key},
            )
            try:
                return self._track_in_one_transaction(batch)
            except IdempotencyKeyTaken as error:
                return [error]
        except Exception as error:
            if len(batch) > 1:
                logger.warning(
                    "batch of product views failed; storing its views one by one",
                    extra={"views": len(batch), "error": type(error).__name__},
                )
                return [outcome for pending in batch for outcome in self.track_batch([pending])]
            logger.exception("product view failed to store", extra={"workspace_id": str(batch[0].workspace_id)})
            return [error]

    def _track_in_one_transaction(self, batch: Sequence[PendingProductView]) -> list[ProductView | Exception]:
        outcomes: list[ProductView | Exception] = []
        with self._views.product_view_batch() as store:
            contacts = resolve_contacts(store, [(pending.workspace_id, pending.view.contact) for pending in batch])
            earlier = self._stored_views_by_key(store, batch)
            now = self._clock()
            new_views: list[ProductView] = []
            for pending, contact in zip(batch, contacts, strict=True):
                if isinstance(contact, Exception):
                    outcomes.append(contact)
                    continue
                fingerprint = fingerprint_product_view(contact.id, pending.view.product)
                key = pending.view.idempotency_key
                stored = earlier.get((pending.workspace_id, key)) if key is not None else None
                if stored is not None:
                    outcomes.append(_replay_outcome(stored, fingerprint))
                    continue
                view = ProductView(
                    id=uuid.uuid4(),
                    workspace_id=pending.workspace_id,
                    contact_id=contact.id,
                    product=pending.view.product,
                    viewed_at=now,
                    idempotency_key=key,
                    request_fingerprint=fingerprint,
                )
                if key is not None:
                    # A later view of this batch with the same key replays this one.
                    earlier[(pending.workspace_id, key)] = view
                new_views.append(view)
                outcomes.append(view)
            store.add_product_views(new_views, [product_viewed_trigger(view) for view in new_views])
        return outcomes

    def _stored_views_by_key(
        self, store: ProductViewBatch, batch: Sequence[PendingProductView]
    ) -> dict[tuple[uuid.UUID, str], ProductView]:
        keys_by_workspace: dict[uuid.UUID, set[str]] = {}
        for pending in batch:
            if pending.view.idempotency_key is not None:
                keys_by_workspace.setdefault(pending.workspace_id, set()).add(pending.view.idempotency_key)
        return {
            (workspace_id, key): view
            for workspace_id, keys in keys_by_workspace.items()
            for key, view in store.product_views_by_idempotency_key(workspace_id, keys).items()
        }

    def list_views(self, workspace_id: uuid.UUID, request: ProductViewListInput) -> ProductViewPage:
        """Return one page of a contact's views, newest first, and the token of the next page."""
        listing = validate_product_view_listing(request, now=self._clock())
        contact = self._contacts.resolve(workspace_id, listing.contact)
        digest = listing.digest(contact.id)
        position = None
        if listing.page_token:
            position = decode_page_token(listing.page_token, digest)
            if position is None:
                raise ValidationFailed(
                    [FieldViolation("page_token", "is not a token returned by this listing with the same filters")]
                )
        query = ProductViewQuery(
            workspace_id=workspace_id,
            contact_id=contact.id,
            distinct_products=listing.distinct_products,
            start_time=listing.start_time,
            end_time=listing.end_time,
            after=position,
            # One extra row shows whether another page follows.
            limit=listing.page_size + 1,
        )
        views = self._views.list_product_views(query)
        if len(views) <= listing.page_size:
            return ProductViewPage(views=views, next_page_token="")
        page = views[: listing.page_size]
        token = encode_page_token(PagePosition(page[-1].viewed_at, page[-1].id), digest)
        return ProductViewPage(views=page, next_page_token=token)


@dataclass(frozen=True, slots=True)
class ProductViewPage:
    """One page of a contact's views and the token of the next one ("" on the last page)."""

    views: list[ProductView]
    next_page_token: str


def _replay_outcome(earlier: ProductView, fingerprint: str) -> ProductView | Exception:
    """Return the earlier view for a retry with the same content, IdempotencyKeyReused for other content."""
    if earlier.request_fingerprint != fingerprint:
        assert earlier.idempotency_key is not None
        return IdempotencyKeyReused(earlier.idempotency_key, str(earlier.id))
    return earlier
