"""Translation between protobuf messages and domain objects; protobuf stops here."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from google.type import money_pb2

from server.domain.contacts import Contact
from server.domain.money import Price
from server.domain.product_views import MoneyInput, ProductView, ProductViewInput
from topmail.tracking.v1 import contact_pb2, product_view_pb2, tracking_service_pb2


def _timestamp(value: object) -> timestamp_pb2.Timestamp:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)  # type: ignore[arg-type]
    return timestamp


def contact_message(contact: Contact) -> contact_pb2.Contact:
    return contact_pb2.Contact(id=str(contact.id), email=contact.email, create_time=_timestamp(contact.created_at))


def product_view_input(request: tracking_service_pb2.TrackProductViewRequest) -> ProductViewInput:
    price = None
    if request.HasField("price"):
        price = MoneyInput(
            units=request.price.units, nanos=request.price.nanos, currency_code=request.price.currency_code
        )
    return ProductViewInput(
        email=request.email,
        contact_id=request.contact_id,
        product_id=request.product_id,
        product_name=request.product_name,
        product_url=request.product_url,
        variant_id=request.variant_id,
        image_url=request.image_url,
        price=price,
        category=request.category,
        brand=request.brand,
        sku=request.sku,
        session_id=request.session_id,
        idempotency_key=request.idempotency_key,
    )


def money_message(price: Price) -> money_pb2.Money:
    return money_pb2.Money(currency_code=price.currency_code, units=price.units, nanos=price.nanos)


def product_view_message(view: ProductView) -> product_view_pb2.ProductView:
    product = view.product
    message = product_view_pb2.ProductView(
        id=str(view.id),
        contact_id=str(view.contact_id),
        product_id=product.product_id,
        product_name=product.product_name,
        product_url=product.product_url,
        variant_id=product.variant_id or "",
        image_url=product.image_url or "",
        category=product.category or "",
        brand=product.brand or "",
        sku=product.sku or "",
        session_id=product.session_id or "",
        viewed_at=_timestamp(view.viewed_at),
        idempotency_key=view.idempotency_key or "",
    )
    if product.price is not None:
        message.price.CopyFrom(money_message(product.price))
    return message
