"""The per-event statuses that TrackingServicer.RecordEmailEvents builds from the use case's outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import cast

from google.rpc import code_pb2, error_details_pb2

from server.domain.email_events import EmailEventInput
from server.domain.errors import IdempotencyKeyReused
from server.domain.product_views import ProductView
from server.entrypoints.grpc_api.servicers import TrackingServicer
from server.usecases.email_events import EmailEventRecorder, PendingEmailEvent, RecordedEmailEvent
from server.usecases.group_commit import GroupCommit
from server.usecases.product_views import PendingProductView, ProductViewTracker
from server.usecases.tracking_links import TrackingLinks
from topmail.tracking.v1 import tracking_service_pb2


class FixedOutcomes:
    """Stands in for EmailEventRecorder.record_many and returns the outcomes it was built with."""

    def __init__(self, outcomes: list[RecordedEmailEvent | Exception]) -> None:
        self.outcomes = outcomes
        self.received: list[EmailEventInput] = []

    def record_many(
        self, workspace_id: uuid.UUID, requests: Sequence[EmailEventInput]
    ) -> list[RecordedEmailEvent | Exception]:
        self.received.extend(requests)
        return self.outcomes


def servicer_with(recorder: FixedOutcomes) -> TrackingServicer:
    # RecordEmailEvents uses only the recorder, so the other collaborators are left out.
    return TrackingServicer(
        product_views=cast(ProductViewTracker, None),
        email_events=cast(EmailEventRecorder, recorder),
        tracking_links=cast(TrackingLinks, None),
        product_view_commits=cast(GroupCommit[PendingProductView, ProductView], None),
        email_event_commits=cast(GroupCommit[PendingEmailEvent, RecordedEmailEvent], None),
    )


def batch_of(*message_ids: str) -> tracking_service_pb2.RecordEmailEventsRequest:
    return tracking_service_pb2.RecordEmailEventsRequest(
        requests=[tracking_service_pb2.RecordEmailEventRequest(message_id=message_id) for message_id in message_ids]
    )


def test_unexpected_error_becomes_generic_internal() -> None:
    recorder = FixedOutcomes([RuntimeError("password=hunter2 in the connection string")])

    result = servicer_with(recorder).RecordEmailEvents(uuid.uuid4(), batch_of("m-1")).results[0]

    assert result.status.code == code_pb2.INTERNAL
    assert result.status.message == "internal error; the server logged it"
    assert list(result.status.details) == []
    assert not result.HasField("response")


def test_domain_error_keeps_reason_and_order() -> None:
    recorder = FixedOutcomes([IdempotencyKeyReused("key-1", "event-1"), RuntimeError("bug")])

    results = servicer_with(recorder).RecordEmailEvents(uuid.uuid4(), batch_of("m-1", "m-2")).results

    assert [message.message_id for message in recorder.received] == ["m-1", "m-2"]
    assert [result.status.code for result in results] == [code_pb2.FAILED_PRECONDITION, code_pb2.INTERNAL]
    info = error_details_pb2.ErrorInfo()
    assert results[0].status.details[0].Unpack(info)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert info.metadata["existing_id"] == "event-1"
