"""Flow triggers: the outbox records that start automations such as abandoned browse."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.domain.money import format_amount
from server.domain.product_views import ProductView


class FlowTriggerType(enum.StrEnum):
    """Kind of flow trigger; the stored value is the name that consumers filter on."""

    PRODUCT_VIEWED = "product_viewed"


@dataclass(frozen=True, slots=True)
class FlowTrigger:
    """One outbox record, stored in the same transaction as the event that caused it.

    `ordering_key` is the contact id: consumers that shard the feed keep each contact's
    triggers in order. The database assigns the global position when the trigger is stored.
    """

    id: uuid.UUID
    workspace_id: uuid.UUID
    trigger_type: FlowTriggerType
    ordering_key: str
    subject_id: uuid.UUID
    payload: dict[str, Any]
    occurred_at: datetime


def product_viewed_trigger(view: ProductView) -> FlowTrigger:
    """Build the `product_viewed` trigger with what browse and price-drop flows need."""
    product = view.product
    payload: dict[str, Any] = {
        "product_view_id": str(view.id),
        "contact_id": str(view.contact_id),
        "product_id": product.product_id,
        "product_name": product.product_name,
        "product_url": product.product_url,
        "variant_id": product.variant_id,
        "image_url": product.image_url,
        "price": format_amount(product.price.amount) if product.price else None,
        "currency_code": product.price.currency_code if product.price else None,
        "category": product.category,
        "brand": product.brand,
        "sku": product.sku,
        "session_id": product.session_id,
        "viewed_at": view.viewed_at.isoformat(),
    }
    return FlowTrigger(
        id=uuid.uuid4(),
        workspace_id=view.workspace_id,
        trigger_type=FlowTriggerType.PRODUCT_VIEWED,
        ordering_key=str(view.contact_id),
        subject_id=view.id,
        payload=payload,
        occurred_at=view.viewed_at,
    )
