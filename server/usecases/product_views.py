"""Tracking product views, with idempotent retries and a flow trigger per stored view."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from server.domain.engagement import PagePosition, decode_page_token, encode_page_token
from server.domain.errors import FieldViolation, IdempotencyKeyReused, ValidationFailed
from server.domain.flow_triggers import product_viewed_trigger
from server.domain.product_views import (
    ProductView,
    ProductViewInput,
    ProductViewListInput,
    ProductViewQuery,
    fingerprint_product_view,
    validate_product_view,
    validate_product_view_listing,
)
from server.usecases.contacts import ContactDirectory
from server.usecases.ports import Clock, IdempotencyKeyTaken, ProductViewStore

logger = logging.getLogger(__name__)


class ProductViewTracker:
    """Stores product views for known contacts."""

    def __init__(self, contacts: ContactDirectory, views: ProductViewStore, clock: Clock) -> None:
        self._contacts = contacts
        self._views = views
        self._clock = clock

    def track(self, workspace_id: uuid.UUID, request: ProductViewInput) -> ProductView:
        """Validate, resolve the contact, and store the view with its trigger.

        A request with an idempotency key that was already used returns the stored view
        when the content is the same and raises IdempotencyKeyReused when it differs.
        """
        valid = validate_product_view(request)
        contact = self._contacts.resolve(workspace_id, valid.contact)
        fingerprint = fingerprint_product_view(contact.id, valid.product)

        if valid.idempotency_key is not None:
            earlier = self._views.find_product_view_by_idempotency_key(workspace_id, valid.idempotency_key)
            if earlier is not None:
                return _replay(earlier, fingerprint)

        view = ProductView(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            contact_id=contact.id,
            product=valid.product,
            viewed_at=self._clock(),
            idempotency_key=valid.idempotency_key,
            request_fingerprint=fingerprint,
        )
        try:
            self._views.add_product_view(view, product_viewed_trigger(view))
        except IdempotencyKeyTaken:
            assert valid.idempotency_key is not None
            logger.info(
                "concurrent retry stored the product view first",
                extra={"workspace_id": str(workspace_id), "idempotency_key": valid.idempotency_key},
            )
            earlier = self._views.find_product_view_by_idempotency_key(workspace_id, valid.idempotency_key)
            if earlier is None:
                raise
            return _replay(earlier, fingerprint)
        return view

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


def _replay(earlier: ProductView, fingerprint: str) -> ProductView:
    if earlier.request_fingerprint != fingerprint:
        assert earlier.idempotency_key is not None
        raise IdempotencyKeyReused(earlier.idempotency_key, str(earlier.id))
    return earlier
