"""RecordEmailEvent validation, ListEmailEvents, GetEngagementStats and concurrency through a real server."""

from __future__ import annotations

import concurrent.futures
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.test_track_product_view import create_contact
from tests.support import ApiCaller, RunningServer, unpack_error
from topmail.tracking.v1 import email_event_pb2, tracking_service_pb2

DELIVERED = email_event_pb2.EMAIL_EVENT_TYPE_DELIVERED
OPENED = email_event_pb2.EMAIL_EVENT_TYPE_OPENED
CLICKED = email_event_pb2.EMAIL_EVENT_TYPE_CLICKED
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
CURL = "curl/8.5.0"
EMAIL = "reader@example.com"
DELIVERY = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(moment)
    return value


def event_request(**fields: Any) -> tracking_service_pb2.RecordEmailEventRequest:
    """An event of EMAIL on message m-1; `at` is seconds after delivery."""
    at = fields.pop("at", None)
    defaults: dict[str, Any] = {"email": EMAIL, "message_id": "m-1", "campaign_id": "spring-sale"}
    if fields.get("event_type") == CLICKED:
        defaults.update(user_agent=BROWSER, client_ip="198.51.100.50", link_url="https://shop.example.com/sale")
    if fields.get("event_type") == OPENED:
        defaults.update(user_agent=BROWSER, client_ip="198.51.100.50")
    defaults.update(fields)
    if at is not None:
        defaults["occurred_at"] = timestamp(DELIVERY + timedelta(seconds=at))
    return tracking_service_pb2.RecordEmailEventRequest(**defaults)


def record(api: ApiCaller, **fields: Any) -> tracking_service_pb2.RecordEmailEventResponse:
    return api.tracking.RecordEmailEvent(event_request(**fields), metadata=api.metadata, timeout=10)


def record_error(api: ApiCaller, **fields: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        record(api, **fields)
    return unpack_error(caught.value)


def deliver(api: ApiCaller, message_id: str = "m-1", email: str = EMAIL) -> None:
    record(api, email=email, message_id=message_id, event_type=DELIVERED, at=0)


def stats(api: ApiCaller, **scope: Any) -> tracking_service_pb2.GetEngagementStatsResponse:
    request = tracking_service_pb2.GetEngagementStatsRequest(**scope)
    return api.tracking.GetEngagementStats(request, metadata=api.metadata, timeout=10)


def list_events(api: ApiCaller, **filters: Any) -> tracking_service_pb2.ListEmailEventsResponse:
    request = tracking_service_pb2.ListEmailEventsRequest(**filters)
    return api.tracking.ListEmailEvents(request, metadata=api.metadata, timeout=10)


@pytest.fixture
def reader(api: ApiCaller) -> str:
    return create_contact(api, EMAIL)


def test_event_keeps_raw_facts(api: ApiCaller, reader: str) -> None:
    event = record(
        api,
        event_type=CLICKED,
        at=3600,
        client_ip="::ffff:198.51.100.50",
        http_method="get",
        link_id="hero",
        request_headers={"Accept-Language": "de"},
    ).email_event

    assert event.contact_id == reader
    assert event.client_ip == "198.51.100.50"
    assert event.http_method == "GET"
    assert event.link_id == "hero"
    assert event.occurred_at.ToDatetime(tzinfo=UTC) == DELIVERY + timedelta(hours=1)
    assert event.classifier_version
    assert event.record_time.seconds > 0


def test_occurred_at_defaults_to_now(api: ApiCaller, reader: str) -> None:
    before = datetime.now(UTC)

    event = record(api, event_type=OPENED).email_event

    assert before - timedelta(seconds=1) <= event.occurred_at.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("fields", "violated"),
    [
        ({"event_type": email_event_pb2.EMAIL_EVENT_TYPE_UNSPECIFIED}, ["event_type"]),
        ({"event_type": 17}, ["event_type"]),
        ({"event_type": OPENED, "client_ip": "300.1.1.1"}, ["client_ip"]),
        ({"event_type": OPENED, "client_ip": "198.51.100"}, ["client_ip"]),
        ({"event_type": CLICKED, "link_url": ""}, ["link_url"]),
        ({"event_type": CLICKED, "link_url": "javascript:alert(1)"}, ["link_url"]),
        ({"event_type": OPENED, "link_url": "https://shop.example.com/"}, ["link_url"]),
        ({"event_type": DELIVERED, "honeypot_link": True}, ["honeypot_link"]),
        ({"event_type": OPENED, "message_id": ""}, ["message_id"]),
        ({"event_type": OPENED, "message_id": "m" * 201}, ["message_id"]),
        ({"event_type": OPENED, "http_method": "G E T"}, ["http_method"]),
        ({"event_type": OPENED, "user_agent": "Mozilla\n/5.0"}, ["user_agent"]),
        ({"event_type": OPENED, "user_agent": "u" * 2049}, ["user_agent"]),
        ({"event_type": OPENED, "email": "", "contact_id": ""}, ["contact_id", "email"]),
        ({"event_type": OPENED, "idempotency_key": "with space"}, ["idempotency_key"]),
    ],
)
def test_invalid_event_names_field(api: ApiCaller, reader: str, fields: dict[str, Any], violated: list[str]) -> None:
    error = record_error(api, **fields)

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(error.violated_fields) == sorted(violated)


def test_time_far_in_future_rejected(api: ApiCaller, reader: str) -> None:
    future = datetime.now(UTC) + timedelta(days=1)

    error = record_error(api, event_type=OPENED, occurred_at=timestamp(future))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["occurred_at"]


def test_time_before_2000_rejected(api: ApiCaller, reader: str) -> None:
    error = record_error(api, event_type=OPENED, occurred_at=timestamp(datetime(1999, 12, 31, tzinfo=UTC)))

    assert error.violated_fields == ["occurred_at"]


def test_too_many_headers_rejected(api: ApiCaller, reader: str) -> None:
    headers = {f"X-Header-{index}": "v" for index in range(21)}

    error = record_error(api, event_type=OPENED, request_headers=headers)

    assert error.violated_fields == ["request_headers"]


def test_unknown_contact_is_not_found(api: ApiCaller) -> None:
    error = record_error(api, event_type=OPENED, email="stranger@example.com")

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.info is not None
    assert error.info.metadata["lookup"] == "email"


def test_every_violation_listed_at_once(api: ApiCaller) -> None:
    error = record_error(
        api, event_type=CLICKED, message_id="", client_ip="not-an-ip", link_url="/relative", contact_id="x"
    )

    assert sorted(error.violated_fields) == ["client_ip", "contact_id", "link_url", "message_id"]


def test_retry_with_same_key_returns_first_event(api: ApiCaller, reader: str) -> None:
    first = record(api, event_type=OPENED, at=60, idempotency_key="open-1").email_event
    second = record(api, event_type=OPENED, at=60, idempotency_key="open-1").email_event

    assert second.id == first.id
    assert len(list_events(api, message_id="m-1").email_events) == 1


def test_reused_key_with_other_event_fails(api: ApiCaller, reader: str) -> None:
    record(api, event_type=OPENED, at=60, idempotency_key="key-2")

    error = record_error(api, event_type=CLICKED, at=60, idempotency_key="key-2")

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.info is not None
    assert error.info.reason == "IDEMPOTENCY_KEY_REUSED"


def test_concurrent_retries_store_one_event(api: ApiCaller, reader: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        events = list(
            pool.map(lambda _: record(api, event_type=CLICKED, at=7200, idempotency_key="c").email_event, range(6))
        )

    assert len({event.id for event in events}) == 1
    assert len(list_events(api, message_id="m-1", event_type=CLICKED).email_events) == 1


def test_stored_delivery_decides_timing(api: ApiCaller, reader: str) -> None:
    deliver(api)

    early = record(api, event_type=CLICKED, at=5).email_event

    assert early.is_bot
    assert early.bot_type == email_event_pb2.BOT_TYPE_TIMING
    assert early.bot_confidence == email_event_pb2.BOT_CONFIDENCE_LOW


def test_request_delivery_time_used_without_stored_one(api: ApiCaller, reader: str) -> None:
    early = record(api, event_type=CLICKED, at=5, delivered_at=timestamp(DELIVERY)).email_event
    late = record(api, event_type=CLICKED, message_id="m-2", at=600, delivered_at=timestamp(DELIVERY)).email_event

    assert early.bot_type == email_event_pb2.BOT_TYPE_TIMING
    assert not late.is_bot


def test_bot_click_creates_no_inferred_open(api: ApiCaller, reader: str) -> None:
    response = record(api, event_type=CLICKED, at=3600, user_agent=CURL)

    assert response.email_event.is_bot
    assert list(response.created_events) == []


def test_second_human_click_creates_no_second_open(api: ApiCaller, reader: str) -> None:
    first = record(api, event_type=CLICKED, at=3600)
    second = record(api, event_type=CLICKED, at=7200)

    assert len(first.created_events) == 1
    assert list(second.created_events) == []


def test_human_open_prevents_inferred_open(api: ApiCaller, reader: str) -> None:
    record(api, event_type=OPENED, at=600)

    response = record(api, event_type=CLICKED, at=3600)

    assert list(response.created_events) == []


def test_late_burst_gives_remaining_click_an_open(api: ApiCaller, reader: str) -> None:
    deliver(api)
    record(api, event_type=CLICKED, at=3600)
    record(api, event_type=CLICKED, at=7200)

    # Two clicks arrive late and form a burst with the first one, whose inferred open goes with it.
    record(api, event_type=CLICKED, at=3600.5)
    response = record(api, event_type=CLICKED, at=3601)

    human = stats(api, message_id="m-1").human
    assert len(response.reclassified_events) >= 1
    assert human.unique_clicks == 1
    assert human.unique_opens == 1
    assert human.clicks == 1


def test_listing_pages_without_gaps(api: ApiCaller, reader: str) -> None:
    for index in range(23):
        record(api, event_type=OPENED, at=60 * index, user_agent=CURL)
    seen: list[str] = []
    token = ""

    for _ in range(10):
        page = list_events(api, message_id="m-1", page_size=5, page_token=token)
        seen.extend(event.id for event in page.email_events)
        token = page.next_page_token
        if not token:
            break

    assert len(seen) == 23
    assert len(set(seen)) == 23
    times = [event.occurred_at.ToDatetime() for event in list_events(api, message_id="m-1", page_size=50).email_events]
    assert times == sorted(times, reverse=True)


def test_listing_filters(api: ApiCaller, reader: str) -> None:
    other = create_contact(api, "other@example.com")
    record(api, event_type=OPENED, at=60)
    record(api, event_type=OPENED, at=120, user_agent=CURL)
    record(api, event_type=CLICKED, at=3600)
    record(api, email="other@example.com", message_id="m-9", campaign_id="autumn", event_type=OPENED, at=60)

    bots = list_events(api, campaign_id="spring-sale", is_bot=True).email_events
    humans = list_events(api, campaign_id="spring-sale", is_bot=False, event_type=OPENED).email_events
    of_other = list_events(api, contact_id=other).email_events
    window = list_events(
        api,
        start_time=timestamp(DELIVERY + timedelta(seconds=100)),
        end_time=timestamp(DELIVERY + timedelta(seconds=3600)),
    ).email_events

    assert [event.user_agent for event in bots] == [CURL]
    assert len(humans) == 1
    assert [event.message_id for event in of_other] == ["m-9"]
    assert [event.occurred_at.ToDatetime(tzinfo=UTC) for event in window] == [DELIVERY + timedelta(seconds=120)]


@pytest.mark.parametrize(
    ("filters", "violated"),
    [
        ({"page_size": -1}, ["page_size"]),
        ({"page_size": 501}, ["page_size"]),
        ({"page_token": "not-a-token"}, ["page_token"]),
        ({"contact_id": "12"}, ["contact_id"]),
    ],
)
def test_invalid_listing_rejected(api: ApiCaller, filters: dict[str, Any], violated: list[str]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list_events(api, **filters)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == violated


def test_page_token_bound_to_filters(api: ApiCaller, reader: str) -> None:
    for index in range(3):
        record(api, event_type=OPENED, at=index)
    token = list_events(api, message_id="m-1", page_size=1).next_page_token

    with pytest.raises(grpc.RpcError) as caught:
        list_events(api, message_id="m-2", page_size=1, page_token=token)

    assert unpack_error(caught.value).violated_fields == ["page_token"]


def test_listing_never_shows_other_workspace(api: ApiCaller, other_api: ApiCaller) -> None:
    create_contact(other_api, EMAIL)
    record(other_api, event_type=OPENED, at=60)

    assert list(list_events(api, message_id="m-1").email_events) == []


def test_stats_before_and_after_bots(api: ApiCaller, reader: str) -> None:
    create_contact(api, "second@example.com")
    deliver(api)
    deliver(api, "m-2", "second@example.com")
    record(api, event_type=OPENED, at=600)
    record(api, event_type=OPENED, at=700)
    record(api, event_type=CLICKED, at=3600)
    before = stats(api, campaign_id="spring-sale", include_bots=True)

    record(api, email="second@example.com", message_id="m-2", event_type=CLICKED, at=3600, user_agent=CURL)
    record(api, email="second@example.com", message_id="m-2", event_type=OPENED, at=5, user_agent="Mozilla/5.0")
    after = stats(api, campaign_id="spring-sale", include_bots=True)
    people_only = stats(api, campaign_id="spring-sale")

    assert (before.human.delivered, before.human.opens, before.human.unique_opens) == (2, 2, 1)
    assert (before.human.clicks, before.human.unique_clicks) == (1, 1)
    assert before.human.open_rate == pytest.approx(0.5)
    assert before.human.click_to_open_rate == pytest.approx(1.0)
    assert after.human == before.human
    assert (after.with_bots.clicks, after.with_bots.unique_clicks) == (2, 2)
    assert (after.with_bots.opens, after.with_bots.unique_opens) == (3, 2)
    assert after.apple_mpp_opens == 1
    assert after.apple_mpp_unique_opens == 1
    breakdown = {entry.bot_type: (entry.opens, entry.clicks) for entry in after.bot_breakdown}
    assert breakdown == {email_event_pb2.BOT_TYPE_USER_AGENT: (0, 1), email_event_pb2.BOT_TYPE_APPLE_MPP: (1, 0)}
    assert not people_only.HasField("with_bots")
    assert list(people_only.bot_breakdown) == []


def test_stats_of_unknown_campaign_are_zero(api: ApiCaller) -> None:
    response = stats(api, campaign_id="never-sent")

    assert response.human.delivered == 0
    assert response.human.open_rate == 0.0


@pytest.mark.parametrize("scope", [{}, {"message_id": "m-1", "campaign_id": "spring-sale"}])
def test_stats_need_exactly_one_scope(api: ApiCaller, scope: dict[str, str]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stats(api, **scope)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(error.violated_fields) == ["campaign_id", "message_id"]


def test_concurrent_burst_turns_every_click_into_bot(grpc_server: RunningServer, api: ApiCaller, reader: str) -> None:
    deliver(api)
    clients = [ApiCaller(grpc_server.address, api.api_key) for _ in range(6)]
    offsets = [3600 + 0.25 * index for index in range(6)]

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            list(
                pool.map(
                    lambda pair: record(pair[0], event_type=CLICKED, at=pair[1], link_id=f"link-{pair[1]}"),
                    zip(clients, offsets, strict=True),
                )
            )
    finally:
        for client in clients:
            client.close()

    clicks = list_events(api, message_id="m-1", event_type=CLICKED).email_events
    assert len(clicks) == 6
    assert all(click.is_bot for click in clicks)
    assert {click.bot_type for click in clicks} == {email_event_pb2.BOT_TYPE_BEHAVIOR}
    human = stats(api, message_id="m-1").human
    assert human.unique_clicks == 0
    assert human.unique_opens == 0


_event_kinds = st.sampled_from(["human_open", "bot_open", "apple_open", "human_click", "bot_click", "honeypot"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(_event_kinds, st.integers(min_value=0, max_value=120), st.sampled_from([0, 1])),
        min_size=1,
        max_size=12,
    )
)
def test_human_clickers_never_exceed_openers(api: ApiCaller, events: list[tuple[str, int, int]]) -> None:
    campaign = f"prop-{uuid.uuid4().hex[:10]}"
    emails = [f"{campaign}-{index}@example.com" for index in range(2)]
    for email in emails:
        create_contact(api, email)
    request_fields: dict[str, dict[str, Any]] = {
        "human_open": {"event_type": OPENED},
        "bot_open": {"event_type": OPENED, "user_agent": CURL},
        "apple_open": {"event_type": OPENED, "user_agent": "Mozilla/5.0", "client_ip": "172.224.226.5"},
        "human_click": {"event_type": CLICKED},
        "bot_click": {"event_type": CLICKED, "user_agent": CURL},
        "honeypot": {"event_type": CLICKED, "honeypot_link": True},
    }

    for kind, seconds, recipient in events:
        record(
            api,
            email=emails[recipient],
            message_id=f"{campaign}-m{recipient}",
            campaign_id=campaign,
            at=3600 + seconds / 4,
            **request_fields[kind],
        )

    campaign_figures = stats(api, campaign_id=campaign).human
    assert campaign_figures.unique_clicks <= campaign_figures.unique_opens
    for recipient in range(2):
        message_figures = stats(api, message_id=f"{campaign}-m{recipient}").human
        assert message_figures.unique_clicks <= message_figures.unique_opens


@pytest.mark.parametrize("client_ip", ["fe80::1%eth0", "fe80::1%" + "x" * 100])
def test_zone_id_in_ip_rejected(api: ApiCaller, reader: str, client_ip: str) -> None:
    error = record_error(api, event_type=OPENED, client_ip=client_ip)

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["client_ip"]


@pytest.mark.parametrize(
    "content",
    [b'["2026-01-01T00:00:00+00:00", 123, "x"]', b"[1]", b"[" * 5000, b'{"a": 1}', b'["x", "y", "z", "w"]'],
)
def test_forged_page_token_rejected(api: ApiCaller, content: bytes) -> None:
    import base64

    token = base64.urlsafe_b64encode(content).decode().rstrip("=")

    with pytest.raises(grpc.RpcError) as caught:
        list_events(api, page_token=token)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["page_token"]


@pytest.mark.parametrize("event_type", [99, -1])
def test_unknown_event_type_filter_rejected(api: ApiCaller, event_type: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list_events(api, event_type=event_type)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["event_type"]


def test_campaign_counts_events_without_campaign_id(api: ApiCaller, reader: str) -> None:
    record(api, event_type=OPENED, at=600, campaign_id="")
    record(api, event_type=CLICKED, at=3600)

    human = stats(api, campaign_id="spring-sale").human

    assert human.unique_opens == 1
    assert human.unique_clicks == 1
    assert human.opens == 1


def test_late_delivery_turns_early_click_into_bot(api: ApiCaller, reader: str) -> None:
    click = record(api, event_type=CLICKED, at=5)
    assert not click.email_event.is_bot

    delivered = record(api, event_type=DELIVERED, at=0)

    reclassified = {event.id: event for event in delivered.reclassified_events}
    assert click.email_event.id in reclassified
    assert reclassified[click.email_event.id].bot_type == email_event_pb2.BOT_TYPE_TIMING
    assert list(reclassified[click.email_event.id].bot_signals) == ["click_soon_after_delivery"]
    assert click.created_events[0].id in reclassified
    human = stats(api, message_id="m-1").human
    assert human.unique_clicks == 0
    assert human.unique_opens == 0


def test_late_delivery_keeps_later_click_human(api: ApiCaller, reader: str) -> None:
    click = record(api, event_type=CLICKED, at=11)

    delivered = record(api, event_type=DELIVERED, at=0)

    assert list(delivered.reclassified_events) == []
    assert not list_events(api, event_type=CLICKED).email_events[0].is_bot
    assert click.email_event.id == list_events(api, event_type=CLICKED).email_events[0].id
