"""TrackingService.RecordEmailEvents: batches of e-mail events through a real server."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tests.e2e.test_email_events_api import (
    BROWSER,
    CLICKED,
    DELIVERED,
    DELIVERY,
    EMAIL,
    OPENED,
    event_request,
    list_events,
    record,
)
from tests.e2e.test_track_product_view import create_contact
from tests.support import ApiCaller, unpack_error
from topmail.tracking.v1 import email_event_pb2, tracking_service_pb2

# The documented maximum number of events per RecordEmailEvents call.
MAX_BATCH = 500
# Seconds after delivery: well past the 10 seconds within which a click is a timing bot.
HOUR = 3600


def record_batch(
    api: ApiCaller, requests: list[tracking_service_pb2.RecordEmailEventRequest], timeout: float = 30
) -> list[tracking_service_pb2.RecordEmailEventResult]:
    batch = tracking_service_pb2.RecordEmailEventsRequest(requests=requests)
    return list(api.tracking.RecordEmailEvents(batch, metadata=api.metadata, timeout=timeout).results)


def record_batch_error(api: ApiCaller, requests: list[tracking_service_pb2.RecordEmailEventRequest]) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        record_batch(api, requests)
    return unpack_error(caught.value)


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"the status has no ErrorInfo: {status}")


def violated_fields(status: status_pb2.Status) -> list[str]:
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return sorted(violation.field for violation in bad_request.field_violations)
    raise AssertionError(f"the status has no BadRequest: {status}")


def event_ids(results: list[tracking_service_pb2.RecordEmailEventResult]) -> list[str]:
    return [result.response.email_event.id for result in results]


@pytest.fixture
def reader(api: ApiCaller) -> str:
    return create_contact(api, EMAIL)


def test_mixed_batch_gets_result_per_event(api: ApiCaller, other_api: ApiCaller, reader: str) -> None:
    other_workspace_contact = create_contact(other_api, "elsewhere@example.com")
    second = create_contact(api, "second@example.com")
    earlier = record(api, event_type=OPENED, at=60, idempotency_key="key-1").email_event
    requests = [
        event_request(event_type=OPENED, at=120, idempotency_key="key-2"),
        event_request(event_type=OPENED, at=130, client_ip="300.1.1.1"),
        event_request(event_type=OPENED, at=140, email="stranger@example.com"),
        event_request(event_type=OPENED, at=150, email="", contact_id=other_workspace_contact),
        event_request(event_type=OPENED, at=160, contact_id=second),
        event_request(event_type=CLICKED, at=HOUR, idempotency_key="key-3"),
        event_request(event_type=CLICKED, at=HOUR, idempotency_key="key-1"),
    ]

    results = record_batch(api, requests)

    codes = [result.status.code for result in results]
    assert codes == [
        code_pb2.OK,
        code_pb2.INVALID_ARGUMENT,
        code_pb2.NOT_FOUND,
        code_pb2.NOT_FOUND,
        code_pb2.INVALID_ARGUMENT,
        code_pb2.OK,
        code_pb2.FAILED_PRECONDITION,
    ]
    assert error_info(results[1].status).reason == "VALIDATION_FAILED"
    assert violated_fields(results[1].status) == ["client_ip"]
    assert error_info(results[2].status).reason == "CONTACT_NOT_FOUND"
    assert error_info(results[2].status).metadata["lookup"] == "email"
    assert error_info(results[3].status).reason == "CONTACT_NOT_FOUND"
    assert error_info(results[3].status).metadata["lookup"] == "contact_id"
    assert error_info(results[4].status).reason == "CONTACT_MISMATCH"
    assert violated_fields(results[4].status) == ["contact_id", "email"]
    reused = error_info(results[6].status)
    assert reused.reason == "IDEMPOTENCY_KEY_REUSED"
    assert reused.metadata["existing_id"] == earlier.id
    for result in results:
        if result.status.code != code_pb2.OK:
            assert result.status.message
            assert not result.HasField("response")
    stored = {event.id for event in list_events(api, message_id="m-1").email_events}
    assert stored == {earlier.id, results[0].response.email_event.id, results[5].response.email_event.id}
    assert list_events(other_api, contact_id=other_workspace_contact).email_events == []


def test_ok_result_is_full_response(api: ApiCaller, reader: str) -> None:
    requests = [event_request(event_type=CLICKED, at=HOUR, link_id="hero", idempotency_key="click-1")]

    result = record_batch(api, requests)[0]

    assert result.status.code == code_pb2.OK
    assert list(result.status.details) == []
    event = result.response.email_event
    assert event.contact_id == reader
    assert event.event_type == CLICKED
    assert event.link_id == "hero"
    assert event.idempotency_key == "click-1"
    assert event.occurred_at.ToDatetime(tzinfo=UTC) == DELIVERY + timedelta(seconds=HOUR)
    assert not event.is_bot
    assert event.classifier_version
    assert [created.event_type for created in result.response.created_events] == [OPENED]


def test_click_after_batched_delivery_is_timing_bot(api: ApiCaller, reader: str) -> None:
    results = record_batch(api, [event_request(event_type=DELIVERED, at=0), event_request(event_type=CLICKED, at=3)])

    click = results[1].response.email_event
    assert [result.status.code for result in results] == [code_pb2.OK, code_pb2.OK]
    assert click.is_bot
    assert click.bot_type == email_event_pb2.BOT_TYPE_TIMING
    assert "click_soon_after_delivery" in click.bot_signals


def test_three_batched_clicks_are_burst(api: ApiCaller, reader: str) -> None:
    requests = [
        event_request(event_type=CLICKED, at=HOUR + offset, link_url=f"https://shop.example.com/item-{index}")
        for index, offset in enumerate((0, 0.5, 1.5))
    ]

    results = record_batch(api, requests)

    ids = event_ids(results)
    reclassified_clicks = {event.id for event in results[2].response.reclassified_events if event.event_type == CLICKED}
    assert reclassified_clicks == {ids[0], ids[1]}
    assert results[2].response.email_event.bot_type == email_event_pb2.BOT_TYPE_BEHAVIOR
    stored = list_events(api, message_id="m-1").email_events
    clicks = [event for event in stored if event.event_type == CLICKED]
    assert {click.id for click in clicks} == set(ids)
    for click in clicks:
        assert click.is_bot
        assert "click_burst" in click.bot_signals
    for event in stored:
        assert event.is_bot, f"{event.event_type} {event.id} is still human"


def test_batched_click_infers_open(api: ApiCaller, reader: str) -> None:
    results = record_batch(api, [event_request(event_type=DELIVERED, at=0), event_request(event_type=CLICKED, at=HOUR)])

    click = results[1].response.email_event
    created = list(results[1].response.created_events)
    assert not click.is_bot
    assert len(created) == 1
    assert created[0].event_type == OPENED
    assert created[0].metadata.inferred
    assert created[0].metadata.inferred_from_event_id == click.id
    assert not created[0].is_bot
    opens = list_events(api, message_id="m-1", event_type=OPENED).email_events
    assert [event.id for event in opens] == [created[0].id]


def test_open_earlier_in_batch_prevents_inference(api: ApiCaller, reader: str) -> None:
    results = record_batch(api, [event_request(event_type=OPENED, at=600), event_request(event_type=CLICKED, at=HOUR)])

    assert list(results[1].response.created_events) == []
    assert len(list_events(api, message_id="m-1", event_type=OPENED).email_events) == 1


def test_retried_batch_stores_nothing_new(api: ApiCaller, reader: str) -> None:
    requests = [
        event_request(event_type=DELIVERED, at=0, idempotency_key="retry-delivered"),
        event_request(event_type=OPENED, at=600, idempotency_key="retry-opened"),
        event_request(event_type=CLICKED, at=HOUR, idempotency_key="retry-clicked"),
    ]
    first = record_batch(api, requests)
    stored_after_first = {event.id for event in list_events(api, message_id="m-1").email_events}

    second = record_batch(api, requests)

    assert [result.status.code for result in second] == [code_pb2.OK] * 3
    assert event_ids(second) == event_ids(first)
    assert {event.id for event in list_events(api, message_id="m-1").email_events} == stored_after_first
    assert len(stored_after_first) == 3


def test_repeated_key_within_batch(api: ApiCaller, reader: str) -> None:
    requests = [
        event_request(event_type=OPENED, at=600, idempotency_key="twice"),
        event_request(event_type=OPENED, at=600, idempotency_key="twice"),
        event_request(event_type=OPENED, at=700, idempotency_key="twice"),
    ]

    results = record_batch(api, requests)

    assert [result.status.code for result in results] == [code_pb2.OK, code_pb2.OK, code_pb2.FAILED_PRECONDITION]
    assert results[1].response.email_event.id == results[0].response.email_event.id
    assert error_info(results[2].status).reason == "IDEMPOTENCY_KEY_REUSED"
    assert error_info(results[2].status).metadata["existing_id"] == results[0].response.email_event.id
    assert len(list_events(api, message_id="m-1").email_events) == 1


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1], ids=["empty", "over-maximum"])
def test_batch_of_wrong_size_is_invalid(api: ApiCaller, reader: str, size: int) -> None:
    requests = [event_request(event_type=OPENED, at=index, user_agent=BROWSER) for index in range(size)]

    error = record_batch_error(api, requests)

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None
    assert error.info.reason == "VALIDATION_FAILED"
    assert error.violated_fields == ["requests"]
    assert list(list_events(api).email_events) == []


def test_batch_of_maximum_size_is_recorded(api: ApiCaller, reader: str) -> None:
    requests = [
        event_request(event_type=OPENED, message_id=f"bulk-{index}", at=60, idempotency_key=f"bulk-{uuid.uuid4()}")
        for index in range(MAX_BATCH)
    ]

    results = record_batch(api, requests, timeout=120)

    assert len(results) == MAX_BATCH
    assert [result.status.code for result in results] == [code_pb2.OK] * MAX_BATCH
    assert [result.response.email_event.message_id for result in results] == [f"bulk-{i}" for i in range(MAX_BATCH)]
    listed = list_events(api, event_type=OPENED, page_size=MAX_BATCH).email_events
    assert {event.id for event in listed} == set(event_ids(results))
