"""The flow-trigger feed, consumer groups, retention and ListProductViews through a real server."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import Engine

from tests.e2e.test_track_product_view import create_contact, example_request, track
from tests.support import ApiCaller, RunningServer, create_workspace_key, unpack_error
from topmail.tracking.v1 import (
    email_event_pb2,
    flow_trigger_pb2,
    flow_trigger_service_pb2,
    flow_trigger_service_pb2_grpc,
    tracking_service_pb2,
)

PRODUCT_VIEWED = flow_trigger_pb2.FLOW_TRIGGER_TYPE_PRODUCT_VIEWED
EMAIL_OPENED = flow_trigger_pb2.FLOW_TRIGGER_TYPE_EMAIL_OPENED
EMAIL_CLICKED = flow_trigger_pb2.FLOW_TRIGGER_TYPE_EMAIL_CLICKED
RETRACTED = flow_trigger_pb2.FLOW_TRIGGER_TYPE_TRIGGER_RETRACTED
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


class TriggerStream:
    """A StreamFlowTriggers call read on a background thread, so that tests can wait with timeouts."""

    def __init__(self, api: ApiCaller, **request: Any) -> None:
        stub = flow_trigger_service_pb2_grpc.FlowTriggerServiceStub(api.channel)
        self.call = stub.StreamFlowTriggers(
            flow_trigger_service_pb2.StreamFlowTriggersRequest(**request), metadata=api.metadata, timeout=60
        )
        self.received: queue.Queue[flow_trigger_pb2.FlowTrigger | grpc.RpcError] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.received.put(response.flow_trigger)
        except grpc.RpcError as error:
            self.received.put(error)

    def take(self, count: int, timeout: float = 5.0) -> list[flow_trigger_pb2.FlowTrigger]:
        """Return the next `count` triggers; fail when they do not arrive within `timeout` seconds."""
        triggers: list[flow_trigger_pb2.FlowTrigger] = []
        deadline = time.monotonic() + timeout
        while len(triggers) < count:
            item = self.received.get(timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(item, grpc.RpcError):
                raise item
            triggers.append(item)
        return triggers

    def nothing_more(self, wait: float = 0.6) -> bool:
        try:
            item = self.received.get(timeout=wait)
        except queue.Empty:
            return True
        return isinstance(item, grpc.RpcError)

    def close(self) -> None:
        self.call.cancel()  # type: ignore[no-untyped-call]
        self._thread.join(timeout=10)


@pytest.fixture
def open_streams() -> Iterator[list[TriggerStream]]:
    streams: list[TriggerStream] = []
    yield streams
    for stream in streams:
        stream.close()


def stream(api: ApiCaller, streams: list[TriggerStream], **request: Any) -> TriggerStream:
    opened = TriggerStream(api, **request)
    streams.append(opened)
    return opened


def ack(api: ApiCaller, group: str, cursor: str) -> str:
    stub = flow_trigger_service_pb2_grpc.FlowTriggerServiceStub(api.channel)
    request = flow_trigger_service_pb2.AckFlowTriggersRequest(consumer_group=group, cursor=cursor)
    return stub.AckFlowTriggers(request, metadata=api.metadata, timeout=10).cursor


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(moment)
    return value


def record_click(api: ApiCaller, at: datetime, **overrides: Any) -> tracking_service_pb2.RecordEmailEventResponse:
    fields: dict[str, Any] = {
        "email": "shopper@example.com",
        "message_id": "m-1",
        "event_type": email_event_pb2.EMAIL_EVENT_TYPE_CLICKED,
        "occurred_at": timestamp(at),
        "client_ip": "198.51.100.50",
        "user_agent": CHROME,
        "link_url": "https://shop.example.com/x",
    }
    fields.update(overrides)
    request = tracking_service_pb2.RecordEmailEventRequest(**fields)
    return api.tracking.RecordEmailEvent(request, metadata=api.metadata, timeout=10)


def test_view_trigger_arrives_within_a_second(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    feed = stream(api, open_streams)
    time.sleep(0.3)

    tracked_at = time.monotonic()
    view = track(api, example_request(session_id="s-9")).product_view
    trigger = feed.take(1, timeout=1.0)[0]

    assert time.monotonic() - tracked_at < 1.0
    assert trigger.trigger_type == PRODUCT_VIEWED
    assert trigger.contact_id == view.contact_id
    assert trigger.cursor == str(trigger.position)
    payload = trigger.product_viewed
    assert payload.product_view_id == view.id
    assert (payload.product_id, payload.product_name, payload.sku) == (
        "prod_abc123",
        "Premium Wireless Headphones",
        "WH-PRO-BLK",
    )
    assert payload.product_url == "https://shop.example.com/products/wireless-headphones"
    assert payload.image_url == "https://shop.example.com/images/headphones.jpg"
    assert (payload.price.units, payload.price.nanos, payload.price.currency_code) == (99, 990_000_000, "USD")
    assert (payload.category, payload.brand, payload.session_id) == ("Electronics", "AudioCo", "s-9")
    assert payload.viewed_at == view.viewed_at


def test_resume_after_disconnect_misses_nothing(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    views = [track(api, example_request(product_id=f"p-{index}")).product_view.id for index in range(3)]
    first = stream(api, open_streams)
    seen = first.take(3)
    first.close()

    views += [track(api, example_request(product_id=f"p-{index}")).product_view.id for index in range(3, 8)]
    resumed = stream(api, open_streams, cursor=seen[-1].cursor)
    rest = resumed.take(5)

    delivered = [trigger.product_viewed.product_view_id for trigger in [*seen, *rest]]
    positions = [trigger.position for trigger in [*seen, *rest]]
    assert delivered == views
    assert positions == sorted(positions)
    assert len(set(positions)) == 8
    assert resumed.nothing_more()


def test_consumer_groups_progress_independently(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    for index in range(4):
        track(api, example_request(product_id=f"p-{index}"))
    everything = stream(api, open_streams).take(4)

    assert ack(api, "abandoned-browse", everything[0].cursor) == everything[0].cursor
    assert ack(api, "price-drop", everything[2].cursor) == everything[2].cursor
    assert ack(api, "price-drop", everything[1].cursor) == everything[2].cursor
    browse = stream(api, open_streams, consumer_group="abandoned-browse").take(3)
    price = stream(api, open_streams, consumer_group="price-drop").take(1)
    fresh = stream(api, open_streams, consumer_group="new-group").take(4)

    assert [trigger.id for trigger in browse] == [trigger.id for trigger in everything[1:]]
    assert [trigger.id for trigger in price] == [everything[3].id]
    assert [trigger.id for trigger in fresh] == [trigger.id for trigger in everything]


def test_type_filter(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    track(api, example_request())
    record_click(api, datetime.now(UTC) - timedelta(hours=1))

    clicks = stream(api, open_streams, trigger_types=[EMAIL_CLICKED])

    assert [trigger.trigger_type for trigger in clicks.take(1)] == [EMAIL_CLICKED]
    assert clicks.nothing_more()


def test_human_events_trigger_and_bots_do_not(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    at = datetime.now(UTC) - timedelta(hours=1)
    record_click(api, at, user_agent="curl/8.5.0")
    record_click(api, at, message_id="m-2", honeypot_link=True)
    click = record_click(api, at + timedelta(minutes=5), message_id="m-3")

    triggers = stream(api, open_streams).take(2)

    assert {trigger.trigger_type for trigger in triggers} == {EMAIL_CLICKED, EMAIL_OPENED}
    opened = next(trigger for trigger in triggers if trigger.trigger_type == EMAIL_OPENED)
    clicked = next(trigger for trigger in triggers if trigger.trigger_type == EMAIL_CLICKED)
    assert opened.email_engagement.inferred
    assert clicked.email_engagement.email_event_id == click.email_event.id
    assert clicked.email_engagement.link_url == "https://shop.example.com/x"
    assert open_streams[-1].nothing_more()


def test_burst_retracts_earlier_triggers(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    at = datetime.now(UTC) - timedelta(hours=1)
    record_click(api, at)
    record_click(api, at + timedelta(seconds=0.5))
    feed = stream(api, open_streams)
    before = feed.take(3)

    record_click(api, at + timedelta(seconds=1))
    retractions = feed.take(3)

    assert sorted(trigger.trigger_type for trigger in before) == sorted([EMAIL_CLICKED, EMAIL_CLICKED, EMAIL_OPENED])
    assert {trigger.trigger_type for trigger in retractions} == {RETRACTED}
    assert {trigger.retraction.retracted_trigger_id for trigger in retractions} == {trigger.id for trigger in before}
    assert {trigger.retraction.reason for trigger in retractions} == {"click_burst"}
    assert feed.nothing_more()


def test_concurrent_views_arrive_in_position_order(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(
            pool.map(lambda index: track(api, example_request(product_id=f"c-{index}")).product_view.id, range(40))
        )
    triggers = stream(api, open_streams).take(40)

    positions = [trigger.position for trigger in triggers]
    assert positions == sorted(positions)
    assert {trigger.product_viewed.product_view_id for trigger in triggers} == ids


def test_restart_loses_nothing(database_url: str, database_engine: Engine) -> None:
    server = RunningServer.start(database_url)
    api = ApiCaller(server.address, create_workspace_key(database_engine))
    create_contact(api)
    streams: list[TriggerStream] = []
    stored = [track(api, example_request(product_id=f"r-{index}")).product_view.id for index in range(3)]
    seen = stream(api, streams).take(3)
    address = server.address
    server.stop()
    for opened in streams:
        opened.close()
    api.close()

    server = RunningServer.start(database_url, grpc_listen=address)
    api = ApiCaller(address, api.api_key)
    try:
        stored += [track(api, example_request(product_id=f"r-{index}")).product_view.id for index in range(3, 6)]
        rest = stream(api, streams, cursor=seen[-1].cursor).take(3)
    finally:
        for opened in streams:
            opened.close()
        api.close()
        server.stop()

    assert [trigger.product_viewed.product_view_id for trigger in [*seen, *rest]] == stored


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "-1"}, "cursor"),
        ({"cursor": "99999999999999999999"}, "cursor"),
        ({"trigger_types": [99]}, "trigger_types"),
        ({"trigger_types": [flow_trigger_pb2.FLOW_TRIGGER_TYPE_UNSPECIFIED]}, "trigger_types"),
        ({"consumer_group": "no spaces"}, "consumer_group"),
    ],
)
def test_bad_stream_request_is_invalid(api: ApiCaller, request_fields: dict[str, Any], field: str) -> None:
    feed = TriggerStream(api, **request_fields)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            feed.take(1)
    finally:
        feed.close()

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == [field]


@pytest.mark.parametrize(
    ("group", "cursor", "field"), [("", "1", "consumer_group"), ("g", "", "cursor"), ("g", "x", "cursor")]
)
def test_bad_ack_is_invalid(api: ApiCaller, group: str, cursor: str, field: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        ack(api, group, cursor)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == [field]


def test_pruning_keeps_unacknowledged_triggers(database_url: str, database_engine: Engine) -> None:
    server = RunningServer.start(database_url, trigger_retention_hours=0.0, trigger_pruning_interval_seconds=0.2)
    api = ApiCaller(server.address, create_workspace_key(database_engine))
    streams: list[TriggerStream] = []
    try:
        create_contact(api)
        for index in range(4):
            track(api, example_request(product_id=f"old-{index}"))
        everything = stream(api, streams).take(4)
        ack(api, "slow", everything[1].cursor)
        ack(api, "fast", everything[3].cursor)
        time.sleep(1.0)
        remaining = stream(api, streams).take(2)
        assert streams[-1].nothing_more()
    finally:
        for opened in streams:
            opened.close()
        api.close()
        server.stop()

    assert [trigger.id for trigger in remaining] == [trigger.id for trigger in everything[2:]]


def list_views(api: ApiCaller, **fields: Any) -> tracking_service_pb2.ListProductViewsResponse:
    request = tracking_service_pb2.ListProductViewsRequest(email="shopper@example.com", **fields)
    return api.tracking.ListProductViews(request, metadata=api.metadata, timeout=10)


def test_list_views_pages_through_250(api: ApiCaller) -> None:
    create_contact(api)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        stored = set(
            pool.map(
                lambda index: track(api, example_request(product_id=f"v-{index % 60}")).product_view.id, range(250)
            )
        )
    seen: list[str] = []
    times: list[datetime] = []
    token = ""

    for _ in range(20):
        page = list_views(api, page_size=40, page_token=token)
        seen.extend(view.id for view in page.product_views)
        times.extend(view.viewed_at.ToDatetime() for view in page.product_views)
        token = page.next_page_token
        if not token:
            break

    assert len(seen) == 250
    assert set(seen) == stored
    assert times == sorted(times, reverse=True)


def test_list_views_distinct_products(api: ApiCaller) -> None:
    create_contact(api)
    latest: dict[str, str] = {}
    for index in range(30):
        product_id = f"d-{index % 7}"
        latest[product_id] = track(api, example_request(product_id=product_id)).product_view.id
    seen: list[Any] = []
    token = ""

    for _ in range(10):
        page = list_views(api, distinct_products=True, page_size=3, page_token=token)
        seen.extend(page.product_views)
        token = page.next_page_token
        if not token:
            break

    assert [view.product_id for view in seen].count("d-0") == 1
    assert {view.product_id: view.id for view in seen} == latest
    assert len(seen) == 7


def test_list_views_time_range(api: ApiCaller) -> None:
    create_contact(api)
    first = track(api, example_request(product_id="early")).product_view
    time.sleep(0.05)
    second = track(api, example_request(product_id="late")).product_view

    only_late = list_views(api, start_time=second.viewed_at).product_views
    only_early = list_views(api, end_time=second.viewed_at).product_views

    assert [view.id for view in only_late] == [second.id]
    assert [view.id for view in only_early] == [first.id]


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"page_size": -1}, "page_size"), ({"page_size": 501}, "page_size"), ({"page_token": "zz"}, "page_token")],
)
def test_bad_view_listing_is_invalid(api: ApiCaller, fields: dict[str, Any], field: str) -> None:
    create_contact(api)

    with pytest.raises(grpc.RpcError) as caught:
        list_views(api, **fields)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == [field]


def test_list_views_of_unknown_contact_is_not_found(api: ApiCaller) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list_views(api)

    assert unpack_error(caught.value).code == grpc.StatusCode.NOT_FOUND


def test_streams_never_cross_workspaces(
    api: ApiCaller, other_api: ApiCaller, open_streams: list[TriggerStream]
) -> None:
    create_contact(other_api)
    track(other_api, example_request())

    assert stream(api, open_streams).nothing_more()


def test_consumer_leaving_mid_backlog_leaves_server_up(api: ApiCaller) -> None:
    create_contact(api)
    for index in range(130):
        track(api, example_request(product_id=f"b-{index}"))
    stub = flow_trigger_service_pb2_grpc.FlowTriggerServiceStub(api.channel)

    for _ in range(5):
        call = stub.StreamFlowTriggers(
            flow_trigger_service_pb2.StreamFlowTriggersRequest(cursor="0"), metadata=api.metadata, timeout=30
        )
        next(iter(call))
        call.cancel()  # type: ignore[no-untyped-call]
    time.sleep(0.5)

    assert track(api, example_request(product_id="after")).product_view.product_id == "after"


def test_positions_never_reused_after_pruning(database_url: str, database_engine: Engine) -> None:
    server = RunningServer.start(database_url, trigger_retention_hours=0.0, trigger_pruning_interval_seconds=0.2)
    api = ApiCaller(server.address, create_workspace_key(database_engine))
    streams: list[TriggerStream] = []
    try:
        create_contact(api)
        # A workspace without consumer groups loses every trigger older than the retention,
        # which is 0 here, so the group exists before the first trigger is stored.
        ack(api, "crm", "0")
        for index in range(3):
            track(api, example_request(product_id=f"first-{index}"))
        first = stream(api, streams).take(3)
        ack(api, "crm", first[-1].cursor)
        time.sleep(1.0)
        later = track(api, example_request(product_id="later")).product_view
        resumed = stream(api, streams, consumer_group="crm").take(1)
    finally:
        for opened in streams:
            opened.close()
        api.close()
        server.stop()

    assert resumed[0].product_viewed.product_view_id == later.id
    assert resumed[0].position > first[-1].position


def test_concurrent_first_acks_keep_highest(api: ApiCaller) -> None:
    create_contact(api)
    for index in range(8):
        track(api, example_request(product_id=f"a-{index}"))
    reader = TriggerStream(api)
    cursors = [trigger.cursor for trigger in reader.take(8)]
    reader.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda cursor: ack(api, "racing", cursor), cursors))

    assert ack(api, "racing", cursors[0]) == cursors[-1]


def test_ack_beyond_newest_trigger_is_invalid(api: ApiCaller) -> None:
    create_contact(api)
    track(api, example_request())

    with pytest.raises(grpc.RpcError) as caught:
        ack(api, "ahead", "9223372036854775807")

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["cursor"]


def test_zero_cursor_with_group_starts_after_ack(api: ApiCaller, open_streams: list[TriggerStream]) -> None:
    create_contact(api)
    for index in range(3):
        track(api, example_request(product_id=f"z-{index}"))
    everything = stream(api, open_streams).take(3)
    ack(api, "zero", everything[1].cursor)

    resumed = stream(api, open_streams, consumer_group="zero", cursor="0").take(1)

    assert [trigger.id for trigger in resumed] == [everything[2].id]


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59.999999-23:59", "0001-01-01T00:00:00+23:59"])
def test_page_token_with_overflowing_time_is_invalid(api: ApiCaller, moment: str) -> None:
    import base64
    import json

    create_contact(api)
    token = base64.urlsafe_b64encode(json.dumps([moment, str(uuid.uuid4()), "x"]).encode()).decode().rstrip("=")

    with pytest.raises(grpc.RpcError) as caught:
        list_views(api, page_token=token)

    assert unpack_error(caught.value).violated_fields == ["page_token"]
