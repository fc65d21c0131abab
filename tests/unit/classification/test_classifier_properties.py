"""Properties of the classifier over arbitrary facts."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.classification import (
    BotClassifier,
    EarlierClick,
    EmailEventFacts,
    EmailEventType,
)
from tests.unit.classification.support import CHROME_WINDOWS, DELIVERED_AT, GMAIL_IMAGE_PROXY

SIGNAL_NAME = re.compile(r"[a-z_]+(:[a-z0-9_]+)?")

times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
)
near_times = st.floats(min_value=-60, max_value=60, allow_nan=False).map(
    lambda seconds: DELIVERED_AT + timedelta(hours=1, seconds=seconds)
)
addresses = st.one_of(
    st.none(),
    st.ip_addresses(),
    st.sampled_from(["40.107.218.12", "3.5.140.10", "172.224.226.5", "66.249.83.210", "::ffff:40.107.1.1"]).map(
        ipaddress.ip_address
    ),
)
user_agents = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", "Mozilla/5.0", CHROME_WINDOWS, GMAIL_IMAGE_PROXY, "curl/8.5.0", "Barracuda Sentinel (EE)"]),
)
earlier_click_lists = st.lists(
    st.builds(EarlierClick, click_id=st.text(max_size=8), occurred_at=near_times, is_human=st.booleans()),
    max_size=8,
).map(tuple)
facts = st.builds(
    EmailEventFacts,
    event_type=st.sampled_from(EmailEventType),
    occurred_at=st.one_of(near_times, times),
    client_ip=addresses,
    user_agent=user_agents,
    http_method=st.one_of(st.text(max_size=8), st.sampled_from(["GET", "HEAD", "head", ""])),
    has_prefetch_header=st.booleans(),
    link_id=st.one_of(st.none(), st.text(max_size=8)),
    link_url=st.one_of(st.none(), st.text(max_size=30)),
    is_honeypot_link=st.booleans(),
    delivered_at=st.one_of(st.none(), st.just(DELIVERED_AT), times),
    earlier_clicks=earlier_click_lists,
)


@settings(max_examples=500, deadline=None)
@given(event=facts)
def test_verdict_is_deterministic_and_consistent(classifier: BotClassifier, event: EmailEventFacts) -> None:
    verdict = classifier.classify(event)

    assert classifier.classify(event) == verdict
    assert verdict.is_bot is bool(verdict.signals)
    assert (verdict.bot_type is None) is not verdict.is_bot
    assert (verdict.confidence is None) is not verdict.is_bot
    assert len(set(verdict.signals)) == len(verdict.signals)
    for signal in verdict.signals:
        assert SIGNAL_NAME.fullmatch(signal), signal


@settings(max_examples=300, deadline=None)
@given(event=facts)
def test_delivered_events_are_never_bots(classifier: BotClassifier, event: EmailEventFacts) -> None:
    delivered = EmailEventFacts(
        EmailEventType.DELIVERED,
        event.occurred_at,
        event.client_ip,
        event.user_agent,
        http_method=event.http_method,
        has_prefetch_header=event.has_prefetch_header,
        is_honeypot_link=event.is_honeypot_link,
        earlier_clicks=event.earlier_clicks,
    )

    assert classifier.classify(delivered).is_bot is False


@settings(max_examples=300, deadline=None)
@given(event=facts)
def test_reclassified_clicks_were_stored_human(classifier: BotClassifier, event: EmailEventFacts) -> None:
    verdict = classifier.classify(event)

    human_ids = {click.click_id for click in event.earlier_clicks if click.is_human}
    assert set(verdict.reclassify_click_ids) <= human_ids
    if verdict.reclassify_click_ids:
        assert "click_burst" in verdict.signals
        assert event.event_type is EmailEventType.CLICKED


@settings(max_examples=300, deadline=None)
@given(event=facts, extra_seconds=st.floats(min_value=31, max_value=10_000, allow_nan=False))
def test_clicks_far_apart_never_burst(classifier: BotClassifier, event: EmailEventFacts, extra_seconds: float) -> None:
    spread = tuple(
        EarlierClick(f"click-{number}", event.occurred_at - (number + 1) * timedelta(seconds=extra_seconds), True)
        for number in range(6)
    )
    verdict = classifier.classify(
        EmailEventFacts(
            EmailEventType.CLICKED,
            event.occurred_at,
            event.client_ip,
            event.user_agent,
            earlier_clicks=spread,
        )
    )

    assert "click_burst" not in verdict.signals
