"""Bot classification of real-world opens and clicks through RecordEmailEvent on a real server.

Each test delivers one message two days before the test runs and records its opens and clicks
at fixed offsets from that delivery, because the server rejects event times more than 5 minutes
ahead of its clock. Addresses in 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32
are documentation ranges that no network list contains, so they stand for residential clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.support import ApiCaller, unpack_error
from topmail.tracking.v1 import contact_service_pb2, email_event_pb2, tracking_service_pb2

CONTACT_EMAIL = "reader@example.com"
MESSAGE_ID = "msg-spring-sale-reader"
LINK_URL = "https://shop.example.com/spring-sale"

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4.1 Mobile/15E148 Safari/604.1"
)
# Equal to ClassificationRules.apple_mpp_user_agent, which marks an open as an Apple Mail Privacy Protection fetch.
APPLE_MPP_USER_AGENT = "Mozilla/5.0"
# An iCloud Private Relay egress address, listed in apple_private_relay.txt.
APPLE_PROXY_IP = "172.224.226.5"
RESIDENTIAL_IP = "198.51.100.50"
# An AWS address, in the prefix 54.144.0.0/12 of aws.txt.
AWS_IP = "54.144.10.20"

OPENED = email_event_pb2.EMAIL_EVENT_TYPE_OPENED
CLICKED = email_event_pb2.EMAIL_EVENT_TYPE_CLICKED

# Well past the 10 seconds after delivery within which a click is a TIMING bot.
HOUR_AFTER_DELIVERY = timedelta(hours=1)


@dataclass
class DeliveredMessage:
    """One message to one contact whose DELIVERED event is stored. Tests place events relative to its delivery."""

    api: ApiCaller
    contact_id: str
    message_id: str
    delivered_at: datetime

    def record(
        self, event_type: email_event_pb2.EmailEventType.ValueType, after: timedelta, **fields: Any
    ) -> tracking_service_pb2.RecordEmailEventResponse:
        """Record an event `after` the delivery, with request fields from `fields`."""
        request = tracking_service_pb2.RecordEmailEventRequest(
            email=CONTACT_EMAIL,
            message_id=self.message_id,
            event_type=event_type,
            occurred_at=to_timestamp(self.delivered_at + after),
            **fields,
        )
        return self.api.tracking.RecordEmailEvent(request, metadata=self.api.metadata, timeout=10)

    def open(
        self, after: timedelta, user_agent: str, client_ip: str, **fields: Any
    ) -> tracking_service_pb2.RecordEmailEventResponse:
        return self.record(OPENED, after, user_agent=user_agent, client_ip=client_ip, **fields)

    def click(
        self,
        after: timedelta,
        user_agent: str = CHROME_WINDOWS,
        client_ip: str = RESIDENTIAL_IP,
        link_url: str = LINK_URL,
        **fields: Any,
    ) -> tracking_service_pb2.RecordEmailEventResponse:
        return self.record(CLICKED, after, user_agent=user_agent, client_ip=client_ip, link_url=link_url, **fields)

    def stats(self, include_bots: bool = False) -> tracking_service_pb2.GetEngagementStatsResponse:
        request = tracking_service_pb2.GetEngagementStatsRequest(message_id=self.message_id, include_bots=include_bots)
        return self.api.tracking.GetEngagementStats(request, metadata=self.api.metadata, timeout=10)

    def events(self, event_type: email_event_pb2.EmailEventType.ValueType) -> dict[str, email_event_pb2.EmailEvent]:
        """List the message's stored events of one type, keyed by id."""
        request = tracking_service_pb2.ListEmailEventsRequest(
            message_id=self.message_id, event_type=event_type, page_size=500
        )
        response = self.api.tracking.ListEmailEvents(request, metadata=self.api.metadata, timeout=10)
        assert response.next_page_token == ""
        return {event.id: event for event in response.email_events}


def to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


@pytest.fixture
def message(api: ApiCaller) -> DeliveredMessage:
    """A message to a new contact, delivered two days ago at a whole second."""
    contact = api.contacts.CreateContact(
        contact_service_pb2.CreateContactRequest(email=CONTACT_EMAIL), metadata=api.metadata
    ).contact
    delivered_at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    delivered = DeliveredMessage(api, contact.id, MESSAGE_ID, delivered_at)
    delivered.record(email_event_pb2.EMAIL_EVENT_TYPE_DELIVERED, timedelta(0))
    return delivered


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def bot_type_name(event: email_event_pb2.EmailEvent) -> str:
    return email_event_pb2.BotType.Name(event.bot_type)


def confidence_name(event: email_event_pb2.EmailEvent) -> str:
    return email_event_pb2.BotConfidence.Name(event.bot_confidence)


def bot_breakdown(stats: tracking_service_pb2.GetEngagementStatsResponse) -> dict[str, tuple[int, int]]:
    """Return the bot breakdown as {bot type name: (opens, clicks)}."""
    return {email_event_pb2.BotType.Name(row.bot_type): (row.opens, row.clicks) for row in stats.bot_breakdown}


# Opens


@pytest.mark.parametrize(
    ("user_agent", "client_ip", "after"),
    [
        pytest.param(
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            # An address in Google's user-triggered fetcher ranges (gmail_image_proxy.txt).
            "66.249.83.210",
            timedelta(minutes=4),
            id="gmail_image_proxy",
        ),
        pytest.param(
            "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
            "203.0.113.20",
            timedelta(minutes=7),
            id="yahoo_mail_proxy",
        ),
        pytest.param(
            "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.6106; Pro; ms-office; MSOffice 14)",
            "198.51.100.23",
            timedelta(hours=1),
            id="outlook_2010",
        ),
        pytest.param(
            "Mozilla/5.0 (X11; Linux i686; rv:17.0) Gecko/20130330 Thunderbird/17.0.5",
            "2001:db8::7",
            timedelta(hours=2),
            id="thunderbird_over_ipv6",
        ),
    ],
)
def test_mail_client_opens_are_human(
    message: DeliveredMessage, user_agent: str, client_ip: str, after: timedelta
) -> None:
    response = message.open(after, user_agent, client_ip)
    stats = message.stats()

    event = response.email_event
    assert not event.is_bot
    assert bot_type_name(event) == "BOT_TYPE_UNSPECIFIED"
    assert confidence_name(event) == "BOT_CONFIDENCE_UNSPECIFIED"
    assert list(event.bot_signals) == []
    assert event.client_ip == client_ip
    assert list(response.created_events) == []
    assert stats.human.opens == 1
    assert stats.human.unique_opens == 1
    assert stats.apple_mpp_opens == 0


def test_apple_privacy_proxy_open(message: DeliveredMessage) -> None:
    response = message.open(seconds(3), APPLE_MPP_USER_AGENT, APPLE_PROXY_IP)
    stats = message.stats(include_bots=True)

    event = response.email_event
    assert event.is_bot
    assert bot_type_name(event) == "BOT_TYPE_APPLE_MPP"
    assert confidence_name(event) == "BOT_CONFIDENCE_HIGH"
    assert "apple_mpp_proxy" in event.bot_signals
    assert stats.human.opens == 0
    assert stats.human.unique_opens == 0
    assert stats.apple_mpp_opens == 1
    assert stats.apple_mpp_unique_opens == 1
    assert stats.with_bots.opens == 1
    assert bot_breakdown(stats) == {"BOT_TYPE_APPLE_MPP": (1, 0)}


@pytest.mark.parametrize(
    ("user_agent", "client_ip", "after", "signal", "confidence"),
    [
        pytest.param(
            "Slack-ImgProxy (+https://api.slack.com/robots)",
            "203.0.113.40",
            timedelta(days=1),
            "bot_user_agent",
            "BOT_CONFIDENCE_HIGH",
            id="slack_image_proxy",
        ),
        pytest.param(
            "",
            "198.51.100.9",
            timedelta(hours=1),
            "empty_user_agent",
            "BOT_CONFIDENCE_MEDIUM",
            id="empty_user_agent",
        ),
    ],
)
def test_user_agent_bot_opens(
    message: DeliveredMessage, user_agent: str, client_ip: str, after: timedelta, signal: str, confidence: str
) -> None:
    response = message.open(after, user_agent, client_ip)
    stats = message.stats(include_bots=True)

    event = response.email_event
    assert event.is_bot
    assert bot_type_name(event) == "BOT_TYPE_USER_AGENT"
    assert confidence_name(event) == confidence
    assert list(event.bot_signals) == [signal]
    assert stats.human.opens == 0
    assert stats.apple_mpp_opens == 0
    assert bot_breakdown(stats) == {"BOT_TYPE_USER_AGENT": (1, 0)}


# Single clicks


@pytest.mark.parametrize(
    ("user_agent", "client_ip", "after"),
    [
        pytest.param(SAFARI_IPHONE, "203.0.113.7", timedelta(minutes=20), id="safari_on_iphone"),
        pytest.param(CHROME_WINDOWS, RESIDENTIAL_IP, timedelta(hours=3), id="chrome_on_windows"),
    ],
)
def test_browser_clicks_are_human(message: DeliveredMessage, user_agent: str, client_ip: str, after: timedelta) -> None:
    response = message.click(after, user_agent, client_ip)
    stats = message.stats()

    event = response.email_event
    assert not event.is_bot
    assert bot_type_name(event) == "BOT_TYPE_UNSPECIFIED"
    assert list(event.bot_signals) == []
    assert event.link_url == LINK_URL
    assert stats.human.clicks == 1
    assert stats.human.unique_clicks == 1


@pytest.mark.parametrize(
    ("request_fields", "after", "bot_type", "confidence", "signals"),
    [
        pytest.param(
            {
                "user_agent": "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 (KHTML, like Gecko)"
                " Chrome/57.0.2987.133 Safari/537.36",
                # Exchange Online Protection, listed in microsoft_eop.txt (40.107.0.0/16).
                "client_ip": "40.107.218.12",
            },
            seconds(1),
            "BOT_TYPE_SECURITY_SCANNER",
            "BOT_CONFIDENCE_HIGH",
            ["security_scanner_network:microsoft", "click_soon_after_delivery"],
            id="exchange_online_protection",
        ),
        pytest.param(
            {"user_agent": "Barracuda Sentinel (EE)", "client_ip": "203.0.113.61"},
            timedelta(minutes=5),
            "BOT_TYPE_SECURITY_SCANNER",
            "BOT_CONFIDENCE_HIGH",
            ["security_scanner_user_agent:barracuda"],
            id="barracuda_sentinel",
        ),
        pytest.param(
            {"user_agent": "python-requests/2.32.3", "client_ip": "203.0.113.62"},
            timedelta(minutes=5),
            "BOT_TYPE_USER_AGENT",
            "BOT_CONFIDENCE_HIGH",
            ["bot_user_agent"],
            id="python_requests",
        ),
        pytest.param(
            {"user_agent": "curl/7.54.0", "client_ip": "203.0.113.63"},
            timedelta(minutes=5),
            "BOT_TYPE_USER_AGENT",
            "BOT_CONFIDENCE_HIGH",
            ["bot_user_agent"],
            id="curl",
        ),
        pytest.param(
            {
                "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "client_ip": "66.249.66.1",
            },
            timedelta(days=1),
            "BOT_TYPE_USER_AGENT",
            "BOT_CONFIDENCE_HIGH",
            ["bot_user_agent"],
            id="googlebot",
        ),
        pytest.param(
            {"user_agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "client_ip": "203.0.113.64"},
            timedelta(hours=2),
            "BOT_TYPE_USER_AGENT",
            "BOT_CONFIDENCE_HIGH",
            ["bot_user_agent"],
            id="slack_link_preview",
        ),
        pytest.param(
            {
                "user_agent": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                "client_ip": "203.0.113.65",
            },
            timedelta(hours=2),
            "BOT_TYPE_USER_AGENT",
            "BOT_CONFIDENCE_HIGH",
            ["bot_user_agent"],
            id="facebook_link_preview",
        ),
        pytest.param(
            {"client_ip": AWS_IP},
            HOUR_AFTER_DELIVERY,
            "BOT_TYPE_DATACENTER",
            "BOT_CONFIDENCE_MEDIUM",
            ["datacenter_network:aws"],
            id="chrome_from_aws",
        ),
        pytest.param(
            {"http_method": "HEAD"},
            HOUR_AFTER_DELIVERY,
            "BOT_TYPE_PREFETCH",
            "BOT_CONFIDENCE_HIGH",
            ["head_request"],
            id="head_request",
        ),
        pytest.param(
            {"request_headers": {"Sec-Purpose": "prefetch"}},
            HOUR_AFTER_DELIVERY,
            "BOT_TYPE_PREFETCH",
            "BOT_CONFIDENCE_HIGH",
            ["prefetch_header"],
            id="sec_purpose_prefetch",
        ),
    ],
)
def test_bot_clicks_are_classified(
    message: DeliveredMessage,
    request_fields: dict[str, Any],
    after: timedelta,
    bot_type: str,
    confidence: str,
    signals: list[str],
) -> None:
    response = message.click(after, **request_fields)
    stats = message.stats(include_bots=True)

    event = response.email_event
    assert event.is_bot
    assert bot_type_name(event) == bot_type
    assert confidence_name(event) == confidence
    assert list(event.bot_signals) == signals
    assert list(response.created_events) == []
    assert stats.human.clicks == 0
    assert stats.human.unique_opens == 0
    assert stats.with_bots.clicks == 1
    assert bot_breakdown(stats) == {bot_type: (0, 1)}


def test_honeypot_click_is_bot(message: DeliveredMessage) -> None:
    response = message.click(HOUR_AFTER_DELIVERY, link_url="https://shop.example.com/hidden", honeypot_link=True)

    event = response.email_event
    assert event.is_bot
    assert bot_type_name(event) == "BOT_TYPE_HONEYPOT"
    assert confidence_name(event) == "BOT_CONFIDENCE_HIGH"
    assert list(event.bot_signals) == ["honeypot_link"]
    assert event.honeypot_link
    assert list(response.created_events) == []


@pytest.mark.parametrize("after", [seconds(9.9), seconds(10)], ids=["at_9.9_seconds", "at_10.0_seconds"])
def test_click_soon_after_delivery_is_bot(message: DeliveredMessage, after: timedelta) -> None:
    event = message.click(after).email_event

    assert event.is_bot
    assert bot_type_name(event) == "BOT_TYPE_TIMING"
    assert confidence_name(event) == "BOT_CONFIDENCE_LOW"
    assert list(event.bot_signals) == ["click_soon_after_delivery"]


def test_click_after_ten_seconds_is_human(message: DeliveredMessage) -> None:
    event = message.click(seconds(10.1)).email_event

    assert not event.is_bot
    assert list(event.bot_signals) == []


# Inferred opens and counting


def test_click_without_open_infers_open(message: DeliveredMessage) -> None:
    response = message.click(HOUR_AFTER_DELIVERY, SAFARI_IPHONE, "203.0.113.7")
    stats = message.stats()

    click = response.email_event
    assert len(response.created_events) == 1
    inferred = response.created_events[0]
    assert inferred.event_type == OPENED
    assert inferred.metadata.inferred
    assert inferred.metadata.inferred_from_event_id == click.id
    assert not inferred.is_bot
    assert inferred.occurred_at == click.occurred_at
    assert inferred.contact_id == message.contact_id
    assert list(message.events(OPENED)) == [inferred.id]
    assert stats.human.unique_opens == 1
    assert stats.human.unique_clicks == 1


def test_click_after_apple_open_infers_open(message: DeliveredMessage) -> None:
    apple_open = message.open(seconds(3), APPLE_MPP_USER_AGENT, APPLE_PROXY_IP).email_event
    response = message.click(HOUR_AFTER_DELIVERY)
    stats = message.stats()

    assert apple_open.is_bot
    assert not response.email_event.is_bot
    assert len(response.created_events) == 1
    assert response.created_events[0].metadata.inferred
    assert not response.created_events[0].is_bot
    assert stats.human.opens == 1
    assert stats.human.unique_opens == 1
    assert stats.human.unique_clicks == 1
    assert stats.apple_mpp_opens == 1


def test_open_before_click_prevents_inference(message: DeliveredMessage) -> None:
    message.open(timedelta(minutes=30), SAFARI_IPHONE, "203.0.113.7")
    response = message.click(HOUR_AFTER_DELIVERY, SAFARI_IPHONE, "203.0.113.7")

    assert list(response.created_events) == []
    assert len(message.events(OPENED)) == 1


def test_same_link_clicked_three_times(message: DeliveredMessage) -> None:
    responses = [message.click(timedelta(hours=1, minutes=5 * index)) for index in range(3)]
    stats = message.stats()

    assert [response.email_event.is_bot for response in responses] == [False, False, False]
    assert stats.human.clicks == 3
    assert stats.human.unique_clicks == 1
    assert stats.human.opens == 1
    assert stats.human.unique_opens == 1


def test_idempotent_retry_returns_first_event(message: DeliveredMessage) -> None:
    first = message.click(HOUR_AFTER_DELIVERY, idempotency_key="click-spring-sale-1")
    second = message.click(HOUR_AFTER_DELIVERY, idempotency_key="click-spring-sale-1")

    assert second.email_event.id == first.email_event.id
    assert second.email_event.idempotency_key == "click-spring-sale-1"
    assert len(first.created_events) == 1
    assert list(second.created_events) == []
    assert list(message.events(CLICKED)) == [first.email_event.id]
    assert len(message.events(OPENED)) == 1


def test_reused_key_with_other_time_fails(message: DeliveredMessage) -> None:
    first = message.click(HOUR_AFTER_DELIVERY, idempotency_key="click-spring-sale-2")

    with pytest.raises(grpc.RpcError) as caught:
        message.click(HOUR_AFTER_DELIVERY + timedelta(minutes=10), idempotency_key="click-spring-sale-2")

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.info is not None
    assert error.info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert error.info.metadata["existing_id"] == first.email_event.id


def test_user_agent_over_limit_rejected(message: DeliveredMessage) -> None:
    accepted = message.open(HOUR_AFTER_DELIVERY, "A" * 2048, RESIDENTIAL_IP).email_event

    with pytest.raises(grpc.RpcError) as caught:
        message.open(HOUR_AFTER_DELIVERY, "A" * 2049, RESIDENTIAL_IP)

    error = unpack_error(caught.value)
    assert len(accepted.user_agent) == 2048
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["user_agent"]


# Click bursts


def test_six_link_burst_is_all_bots(message: DeliveredMessage) -> None:
    responses = [
        message.click(HOUR_AFTER_DELIVERY + seconds(0.3 * index), link_url=f"https://shop.example.com/item-{index}")
        for index in range(6)
    ]
    clicks = message.events(CLICKED)
    opens = message.events(OPENED)

    click_ids = [response.email_event.id for response in responses]
    assert [response.email_event.is_bot for response in responses] == [False, False, True, True, True, True]
    for response in responses[2:]:
        assert bot_type_name(response.email_event) == "BOT_TYPE_BEHAVIOR"
    reclassified = {event.id: event for event in responses[2].reclassified_events}
    assert set(click_ids[:2]) <= set(reclassified)
    for click_id in click_ids[:2]:
        assert bot_type_name(reclassified[click_id]) == "BOT_TYPE_BEHAVIOR"
    for response in responses[3:]:
        assert list(response.reclassified_events) == []
    assert set(clicks) == set(click_ids)
    for click in clicks.values():
        assert click.is_bot
        assert bot_type_name(click) == "BOT_TYPE_BEHAVIOR"
        assert "click_burst" in click.bot_signals
    assert len(opens) == 1
    for inferred_open in opens.values():
        assert inferred_open.is_bot
        assert inferred_open.id in reclassified


def test_two_clicks_in_two_seconds_human(message: DeliveredMessage) -> None:
    first = message.click(HOUR_AFTER_DELIVERY, link_url="https://shop.example.com/a")
    second = message.click(HOUR_AFTER_DELIVERY + seconds(1), link_url="https://shop.example.com/b")

    assert not first.email_event.is_bot
    assert not second.email_event.is_bot
    assert list(second.reclassified_events) == []


def test_three_clicks_in_two_seconds_bots(message: DeliveredMessage) -> None:
    first = message.click(HOUR_AFTER_DELIVERY, link_url="https://shop.example.com/a")
    second = message.click(HOUR_AFTER_DELIVERY + seconds(1), link_url="https://shop.example.com/b")
    third = message.click(HOUR_AFTER_DELIVERY + seconds(2), link_url="https://shop.example.com/c")

    reclassified_clicks = {event.id for event in third.reclassified_events if event.event_type == CLICKED}
    assert bot_type_name(third.email_event) == "BOT_TYPE_BEHAVIOR"
    assert confidence_name(third.email_event) == "BOT_CONFIDENCE_HIGH"
    assert reclassified_clicks == {first.email_event.id, second.email_event.id}
    assert message.stats().human.clicks == 0


def test_three_clicks_over_two_seconds_human(message: DeliveredMessage) -> None:
    responses = [message.click(HOUR_AFTER_DELIVERY + seconds(offset)) for offset in (0, 1, 2.1)]

    assert [response.email_event.is_bot for response in responses] == [False, False, False]
    assert message.stats().human.clicks == 3


def test_four_clicks_in_thirty_seconds_human(message: DeliveredMessage) -> None:
    responses = [message.click(HOUR_AFTER_DELIVERY + seconds(7 * index)) for index in range(4)]

    assert [response.email_event.is_bot for response in responses] == [False, False, False, False]
    assert message.stats().human.clicks == 4


def test_five_clicks_in_thirty_seconds_bots(message: DeliveredMessage) -> None:
    responses = [message.click(HOUR_AFTER_DELIVERY + seconds(7 * index)) for index in range(5)]

    fifth = responses[4]
    reclassified_clicks = {event.id for event in fifth.reclassified_events if event.event_type == CLICKED}
    assert [response.email_event.is_bot for response in responses[:4]] == [False, False, False, False]
    assert bot_type_name(fifth.email_event) == "BOT_TYPE_BEHAVIOR"
    assert reclassified_clicks == {response.email_event.id for response in responses[:4]}
    assert message.stats().human.clicks == 0


def test_five_clicks_spanning_exactly_thirty_seconds(message: DeliveredMessage) -> None:
    responses = [message.click(HOUR_AFTER_DELIVERY + seconds(7.5 * index)) for index in range(5)]

    assert bot_type_name(responses[4].email_event) == "BOT_TYPE_BEHAVIOR"
    assert message.stats().human.clicks == 0


def test_five_clicks_over_thirty_seconds_human(message: DeliveredMessage) -> None:
    responses = [message.click(HOUR_AFTER_DELIVERY + seconds(7.525 * index)) for index in range(5)]

    assert [response.email_event.is_bot for response in responses] == [False, False, False, False, False]
    assert message.stats().human.clicks == 5


def test_burst_removes_inferred_open_from_humans(message: DeliveredMessage) -> None:
    first = message.click(HOUR_AFTER_DELIVERY)
    message.click(HOUR_AFTER_DELIVERY + seconds(0.5))
    before = message.stats()
    third = message.click(HOUR_AFTER_DELIVERY + seconds(1))
    after = message.stats(include_bots=True)

    inferred_open_id = first.created_events[0].id
    reclassified_opens = [event for event in third.reclassified_events if event.event_type == OPENED]
    assert before.human.unique_opens == 1
    assert before.human.unique_clicks == 1
    assert [event.id for event in reclassified_opens] == [inferred_open_id]
    assert bot_type_name(reclassified_opens[0]) == "BOT_TYPE_BEHAVIOR"
    assert list(third.created_events) == []
    assert after.human.opens == 0
    assert after.human.unique_opens == 0
    assert after.human.unique_clicks == 0
    assert after.with_bots.opens == 1
    assert after.with_bots.unique_opens == 1
    assert after.with_bots.clicks == 3
    assert bot_breakdown(after) == {"BOT_TYPE_BEHAVIOR": (1, 3)}
