"""The FlowTriggerService servicer and the translation of stored triggers into messages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf import timestamp_pb2

from server.domain.flow_triggers import FlowTriggerType, StoredFlowTrigger
from server.domain.money import Price
from server.entrypoints.grpc_api.translate import money_message
from server.usecases.flow_triggers import FlowTriggerFeed
from topmail.tracking.v1 import flow_trigger_pb2, flow_trigger_service_pb2

_TYPE_NUMBERS = {
    FlowTriggerType.PRODUCT_VIEWED: flow_trigger_pb2.FLOW_TRIGGER_TYPE_PRODUCT_VIEWED,
    FlowTriggerType.EMAIL_OPENED: flow_trigger_pb2.FLOW_TRIGGER_TYPE_EMAIL_OPENED,
    FlowTriggerType.EMAIL_CLICKED: flow_trigger_pb2.FLOW_TRIGGER_TYPE_EMAIL_CLICKED,
    FlowTriggerType.TRIGGER_RETRACTED: flow_trigger_pb2.FLOW_TRIGGER_TYPE_TRIGGER_RETRACTED,
}
_TYPES_BY_NUMBER = {number: trigger_type for trigger_type, number in _TYPE_NUMBERS.items()}


class FlowTriggerServicer:
    """Implements `topmail.tracking.v1.FlowTriggerService`.

    A stream reads the feed in batches. When it has caught up it polls every `poll_seconds`,
    which also picks up triggers that other server processes stored.
    TODO: wake streams by PostgreSQL LISTEN/NOTIFY instead of polling, because every idle stream
    costs a query per poll on the shared worker threads.
    """

    def __init__(
        self, feed: FlowTriggerFeed, executor: Executor, *, poll_seconds: float = 0.2, batch_size: int = 100
    ) -> None:
        self._feed = feed
        self._executor = executor
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every open stream, so that a shutdown need not wait for consumers to leave."""
        self._closing.set()

    async def StreamFlowTriggers(
        self, workspace_id: uuid.UUID, request: flow_trigger_service_pb2.StreamFlowTriggersRequest
    ) -> AsyncIterator[flow_trigger_service_pb2.StreamFlowTriggersResponse]:
        loop = asyncio.get_running_loop()
        start = await loop.run_in_executor(
            self._executor,
            functools.partial(
                self._feed.start,
                workspace_id,
                consumer_group=request.consumer_group,
                cursor=request.cursor,
                trigger_types=[_TYPES_BY_NUMBER.get(number) for number in request.trigger_types],
            ),
        )
        while not self._closing.is_set():
            batch = await loop.run_in_executor(self._executor, self._feed.read, workspace_id, start, self._batch_size)
            for stored in batch:
                yield flow_trigger_service_pb2.StreamFlowTriggersResponse(flow_trigger=flow_trigger_message(stored))
            if batch:
                start = dataclasses.replace(start, after_position=batch[-1].position)
            if len(batch) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=self._poll_seconds)

    def AckFlowTriggers(
        self, workspace_id: uuid.UUID, request: flow_trigger_service_pb2.AckFlowTriggersRequest
    ) -> flow_trigger_service_pb2.AckFlowTriggersResponse:
        position = self._feed.acknowledge(workspace_id, consumer_group=request.consumer_group, cursor=request.cursor)
        return flow_trigger_service_pb2.AckFlowTriggersResponse(cursor=str(position))


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    return "" if value is None else str(value)


def flow_trigger_message(stored: StoredFlowTrigger) -> flow_trigger_pb2.FlowTrigger:
    trigger = stored.trigger
    payload = trigger.payload
    message = flow_trigger_pb2.FlowTrigger(
        id=str(trigger.id),
        position=stored.position,
        cursor=str(stored.position),
        trigger_type=_TYPE_NUMBERS[trigger.trigger_type],
        contact_id=trigger.ordering_key,
        ordering_key=trigger.ordering_key,
        occurred_at=_timestamp(trigger.occurred_at),
        create_time=_timestamp(stored.created_at),
    )
    if trigger.trigger_type is FlowTriggerType.PRODUCT_VIEWED:
        viewed = flow_trigger_pb2.ProductViewedPayload(
            product_view_id=_text(payload, "product_view_id"),
            product_id=_text(payload, "product_id"),
            product_name=_text(payload, "product_name"),
            product_url=_text(payload, "product_url"),
            image_url=_text(payload, "image_url"),
            variant_id=_text(payload, "variant_id"),
            category=_text(payload, "category"),
            brand=_text(payload, "brand"),
            sku=_text(payload, "sku"),
            session_id=_text(payload, "session_id"),
            viewed_at=_timestamp(datetime.fromisoformat(payload["viewed_at"])),
        )
        if payload.get("price") is not None:
            viewed.price.CopyFrom(money_message(Price(Decimal(payload["price"]), payload["currency_code"])))
        message.product_viewed.CopyFrom(viewed)
    elif trigger.trigger_type is FlowTriggerType.TRIGGER_RETRACTED:
        message.retraction.CopyFrom(
            flow_trigger_pb2.TriggerRetraction(
                retracted_trigger_id=_text(payload, "retracted_trigger_id"),
                retracted_position=int(payload["retracted_position"]),
                retracted_trigger_type=_TYPE_NUMBERS[FlowTriggerType(payload["retracted_trigger_type"])],
                reason=_text(payload, "reason"),
            )
        )
    else:
        message.email_engagement.CopyFrom(
            flow_trigger_pb2.EmailEngagementPayload(
                email_event_id=_text(payload, "email_event_id"),
                message_id=_text(payload, "message_id"),
                campaign_id=_text(payload, "campaign_id"),
                link_url=_text(payload, "link_url"),
                link_id=_text(payload, "link_id"),
                inferred=bool(payload.get("inferred")),
                occurred_at=_timestamp(datetime.fromisoformat(payload["occurred_at"])),
            )
        )
    return message
