"""Product views: validation of a tracking request and the record that gets stored."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

from server.domain.contacts import ContactReference, check_contact_reference
from server.domain.email_events import TimestampInput, check_timestamp
from server.domain.engagement import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PagePosition
from server.domain.money import Price, check_money, format_amount
from server.domain.validation import Violations, check_http_url, check_idempotency_key, check_text

MAX_PRODUCT_ID_LENGTH = 100
MAX_PRODUCT_NAME_LENGTH = 200
MAX_ATTRIBUTE_LENGTH = 100


@dataclass(frozen=True, slots=True)
class MoneyInput:
    """The parts of a price as the caller sent them, before validation."""

    units: int
    nanos: int
    currency_code: str


@dataclass(frozen=True, slots=True)
class ProductViewInput:
    """A product-view request as the caller sent it, before validation."""

    email: str = ""
    contact_id: str = ""
    product_id: str = ""
    product_name: str = ""
    product_url: str = ""
    variant_id: str = ""
    image_url: str = ""
    price: MoneyInput | None = None
    category: str = ""
    brand: str = ""
    sku: str = ""
    session_id: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class ProductDetails:
    """The validated product fields of a view; optional ones are None when not given."""

    product_id: str
    product_name: str
    product_url: str
    variant_id: str | None
    image_url: str | None
    price: Price | None
    category: str | None
    brand: str | None
    sku: str | None
    session_id: str | None


@dataclass(frozen=True, slots=True)
class ValidProductViewRequest:
    """A validated product-view request."""

    contact: ContactReference
    product: ProductDetails
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class ProductView:
    """A stored product view."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    contact_id: uuid.UUID
    product: ProductDetails
    viewed_at: datetime
    idempotency_key: str | None
    request_fingerprint: str


def validate_product_view(request: ProductViewInput) -> ValidProductViewRequest:
    """Check every field of a product-view request and raise ValidationFailed listing all violations."""
    violations = Violations()
    contact = check_contact_reference(violations, request.email, request.contact_id)
    product_id = check_text(
        violations, "product_id", request.product_id, max_length=MAX_PRODUCT_ID_LENGTH, required=True
    )
    product_name = check_text(
        violations, "product_name", request.product_name, max_length=MAX_PRODUCT_NAME_LENGTH, required=True
    )
    product_url = check_http_url(violations, "product_url", request.product_url, required=True)
    image_url = check_http_url(violations, "image_url", request.image_url)
    attributes = {
        field: check_text(violations, field, getattr(request, field), max_length=MAX_ATTRIBUTE_LENGTH)
        for field in ("variant_id", "category", "brand", "sku", "session_id")
    }
    price = None
    if request.price is not None:
        price = check_money(
            violations,
            "price",
            units=request.price.units,
            nanos=request.price.nanos,
            currency_code=request.price.currency_code,
        )
    idempotency_key = check_idempotency_key(violations, "idempotency_key", request.idempotency_key)

    violations.raise_if_any()
    assert contact is not None
    assert product_id is not None
    assert product_name is not None
    assert product_url is not None
    product = ProductDetails(
        product_id=product_id,
        product_name=product_name,
        product_url=product_url,
        variant_id=attributes["variant_id"],
        image_url=image_url,
        price=price,
        category=attributes["category"],
        brand=attributes["brand"],
        sku=attributes["sku"],
        session_id=attributes["session_id"],
    )
    return ValidProductViewRequest(contact=contact, product=product, idempotency_key=idempotency_key)


def fingerprint_product_view(contact_id: uuid.UUID, product: ProductDetails) -> str:
    """Return a SHA-256 hex digest of the view's content, to tell an idempotent retry from key reuse."""
    content = asdict(product)
    if product.price is not None:
        content["price"] = {"amount": format_amount(product.price.amount), "currency_code": product.price.currency_code}
    content["contact_id"] = str(contact_id)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProductViewListInput:
    """A listing of a contact's views as the caller sent it."""

    email: str = ""
    contact_id: str = ""
    distinct_products: bool = False
    start_time: TimestampInput | None = None
    end_time: TimestampInput | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class ProductViewQuery:
    """One page of a contact's views, newest first."""

    workspace_id: uuid.UUID
    contact_id: uuid.UUID
    distinct_products: bool
    start_time: datetime | None
    end_time: datetime | None
    after: PagePosition | None
    limit: int


@dataclass(frozen=True, slots=True)
class ValidProductViewListing:
    """A validated listing request; the contact is resolved by the use case."""

    contact: ContactReference
    distinct_products: bool
    start_time: datetime | None
    end_time: datetime | None
    page_size: int
    page_token: str

    def digest(self, contact_id: uuid.UUID) -> str:
        """Return a short hash of the contact and filters, so a page token cannot be reused with others."""
        content = json.dumps(
            [
                str(contact_id),
                self.distinct_products,
                self.start_time.isoformat() if self.start_time else None,
                self.end_time.isoformat() if self.end_time else None,
            ]
        )
        return hashlib.sha256(content.encode()).hexdigest()[:16]


def validate_product_view_listing(request: ProductViewListInput, *, now: datetime) -> ValidProductViewListing:
    """Check a listing request and raise ValidationFailed listing all violations."""
    violations = Violations()
    contact = check_contact_reference(violations, request.email, request.contact_id)
    start_time = check_timestamp(violations, "start_time", request.start_time, now=now) if request.start_time else None
    end_time = check_timestamp(violations, "end_time", request.end_time, now=now) if request.end_time else None
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        violations.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {request.page_size}")
    violations.raise_if_any()
    assert contact is not None

    return ValidProductViewListing(
        contact=contact,
        distinct_products=request.distinct_products,
        start_time=start_time,
        end_time=end_time,
        page_size=request.page_size or DEFAULT_PAGE_SIZE,
        page_token=request.page_token,
    )
