"""Flow triggers: the outbox records that start automations such as abandoned browse."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.domain.classification import EmailEventType
from server.domain.email_events import EmailEvent
from server.domain.money import format_amount
from server.domain.product_views import ProductView
from server.domain.validation import Violations

MAX_CONSUMER_GROUP_LENGTH = 100
MAX_POSITION = 2**63 - 1
_CONSUMER_GROUP_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")


class FlowTriggerType(enum.StrEnum):
    """Kind of flow trigger; the stored value is the name that consumers filter on."""

    PRODUCT_VIEWED = "product_viewed"
    EMAIL_OPENED = "email_opened"
    EMAIL_CLICKED = "email_clicked"
    TRIGGER_RETRACTED = "trigger_retracted"


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


@dataclass(frozen=True, slots=True)
class StoredFlowTrigger:
    """A trigger with the position the database gave it."""

    trigger: FlowTrigger
    position: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TriggerReference:
    """An earlier trigger of an event, as retractions need it."""

    id: uuid.UUID
    position: int
    trigger_type: FlowTriggerType
    subject_id: uuid.UUID


def email_engagement_trigger(event: EmailEvent) -> FlowTrigger | None:
    """Build the `email_opened` or `email_clicked` trigger of a human open or click; None for anything else."""
    if event.verdict.is_bot:
        return None
    if event.event_type is EmailEventType.OPENED:
        trigger_type = FlowTriggerType.EMAIL_OPENED
    elif event.event_type is EmailEventType.CLICKED:
        trigger_type = FlowTriggerType.EMAIL_CLICKED
    else:
        return None
    payload: dict[str, Any] = {
        "email_event_id": str(event.id),
        "message_id": event.message_id,
        "campaign_id": event.campaign_id,
        "link_url": event.link_url,
        "link_id": event.link_id,
        "inferred": event.inferred,
        "occurred_at": event.occurred_at.isoformat(),
    }
    return FlowTrigger(
        id=uuid.uuid4(),
        workspace_id=event.workspace_id,
        trigger_type=trigger_type,
        ordering_key=str(event.contact_id),
        subject_id=event.id,
        payload=payload,
        occurred_at=event.occurred_at,
    )


def retraction_trigger(event: EmailEvent, retracted: TriggerReference, reason: str, now: datetime) -> FlowTrigger:
    """Build the trigger that voids an earlier trigger of an event later classified as a bot."""
    return FlowTrigger(
        id=uuid.uuid4(),
        workspace_id=event.workspace_id,
        trigger_type=FlowTriggerType.TRIGGER_RETRACTED,
        ordering_key=str(event.contact_id),
        subject_id=event.id,
        payload={
            "retracted_trigger_id": str(retracted.id),
            "retracted_position": retracted.position,
            "retracted_trigger_type": retracted.trigger_type.value,
            "reason": reason,
        },
        occurred_at=now,
    )


def check_cursor(violations: Violations, field: str, value: str) -> int | None:
    """Parse a feed cursor: a decimal position from 0 to 2^63-1; empty means 0."""
    if not value:
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > MAX_POSITION:
        violations.add(field, "must be the cursor of a trigger: a decimal number from 0 to 9223372036854775807")
        return None
    return int(value)


def check_consumer_group(violations: Violations, field: str, value: str, *, required: bool) -> str | None:
    if not value:
        if required:
            violations.add(field, "is required")
        return None
    if not _CONSUMER_GROUP_PATTERN.fullmatch(value):
        violations.add(
            field,
            f"must be 1 to {MAX_CONSUMER_GROUP_LENGTH} characters of letters, digits, '.', '_' and '-'",
        )
        return None
    return value
