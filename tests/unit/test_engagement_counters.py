"""Engagement counter deltas and the counts built from counters, checked against counts computed from events."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.classification import BotType, EmailEventType
from server.domain.email_events import EmailEvent, EventVerdict
from server.domain.engagement import (
    EngagementCounterKey,
    EngagementCounts,
    EngagementScope,
    EventCounts,
    ScopeKind,
    engagement_counter_deltas,
    engagement_counter_scope,
    engagement_counts_from_counters,
)
from tests.engagement_support import HUMAN, bot_verdict, email_event, expected_engagement_counts

DELIVERED = EmailEventType.DELIVERED
OPENED = EmailEventType.OPENED
CLICKED = EmailEventType.CLICKED
WORKSPACE = uuid.UUID("00000000-0000-4000-8000-000000000001")
CONTACT = uuid.UUID("00000000-0000-4000-8000-0000000000c1")


def message_key(metric: str, message_id: str = "m1") -> EngagementCounterKey:
    return EngagementCounterKey(WORKSPACE, ScopeKind.MESSAGE, message_id, metric)


def campaign_key(metric: str, campaign_id: str) -> EngagementCounterKey:
    return EngagementCounterKey(WORKSPACE, ScopeKind.CAMPAIGN, campaign_id, metric)


def new_event(
    event_type: EmailEventType,
    *,
    campaign_id: str | None = None,
    verdict: EventVerdict = HUMAN,
    inferred_from: EmailEvent | None = None,
) -> EmailEvent:
    return email_event(
        WORKSPACE, CONTACT, "m1", event_type, campaign_id=campaign_id, verdict=verdict, inferred_from=inferred_from
    )


def with_verdict(event: EmailEvent, verdict: EventVerdict) -> EmailEvent:
    return dataclasses.replace(event, verdict=verdict)


def type_metrics(
    event_type: str, *, events: int, messages: int, human_events: int, human_messages: int
) -> Counter[str]:
    return Counter(
        {
            f"{event_type}.events": events,
            f"{event_type}.messages": messages,
            f"{event_type}.human_events": human_events,
            f"{event_type}.human_messages": human_messages,
        }
    )


def scoped(
    metrics: Counter[str], scope: str, scope_kind: ScopeKind = ScopeKind.MESSAGE
) -> dict[EngagementCounterKey, int]:
    return {EngagementCounterKey(WORKSPACE, scope_kind, scope, metric): value for metric, value in metrics.items()}


def test_first_delivery_adds_message_counters() -> None:
    delivered = new_event(DELIVERED)

    deltas = engagement_counter_deltas([], [delivered])

    assert deltas == {
        message_key("delivered.events"): 1,
        message_key("delivered.messages"): 1,
        message_key("delivered.human_events"): 1,
        message_key("delivered.human_messages"): 1,
    }


def test_unchanged_events_give_no_deltas() -> None:
    events = [new_event(DELIVERED, campaign_id="spring"), new_event(OPENED)]

    assert engagement_counter_deltas(events, events) == {}
    assert engagement_counter_deltas([], []) == {}


def test_second_open_adds_events_not_messages() -> None:
    first_open = new_event(OPENED)
    second_open = new_event(OPENED)

    deltas = engagement_counter_deltas([first_open], [first_open, second_open])

    assert deltas == {message_key("opened.events"): 1, message_key("opened.human_events"): 1}


def test_reclassified_only_open_loses_human_message() -> None:
    delivered = new_event(DELIVERED, campaign_id="spring")
    open_event = new_event(OPENED)
    before = [delivered, open_event]
    after = [delivered, with_verdict(open_event, bot_verdict(BotType.TIMING))]

    deltas = engagement_counter_deltas(before, after)

    changes = {"opened.human_events": -1, "opened.human_messages": -1, "bot.timing.opened": 1}
    assert deltas == {
        **{message_key(metric): value for metric, value in changes.items()},
        **{campaign_key(metric, "spring"): value for metric, value in changes.items()},
    }


def test_reclassified_open_keeps_other_human_open() -> None:
    bot_open = new_event(OPENED)
    human_open = new_event(OPENED)

    deltas = engagement_counter_deltas(
        [bot_open, human_open], [with_verdict(bot_open, bot_verdict(BotType.DATACENTER)), human_open]
    )

    assert deltas == {message_key("opened.human_events"): -1, message_key("bot.datacenter.opened"): 1}


def test_inferred_open_counts_as_open() -> None:
    delivered = new_event(DELIVERED)
    click = new_event(CLICKED)
    inferred_open = new_event(OPENED, inferred_from=click)

    deltas = engagement_counter_deltas([delivered], [delivered, click, inferred_open])

    assert deltas == scoped(
        type_metrics("clicked", events=1, messages=1, human_events=1, human_messages=1)
        + type_metrics("opened", events=1, messages=1, human_events=1, human_messages=1),
        "m1",
    )


def test_bot_click_takes_inferred_open_along() -> None:
    click = new_event(CLICKED)
    inferred_open = new_event(OPENED, inferred_from=click)
    burst = bot_verdict(BotType.BEHAVIOR)

    deltas = engagement_counter_deltas(
        [click, inferred_open], [with_verdict(click, burst), with_verdict(inferred_open, burst)]
    )

    assert deltas == {
        message_key("clicked.human_events"): -1,
        message_key("clicked.human_messages"): -1,
        message_key("opened.human_events"): -1,
        message_key("opened.human_messages"): -1,
        message_key("bot.behavior.clicked"): 1,
        message_key("bot.behavior.opened"): 1,
    }


def test_late_campaign_adds_whole_pair() -> None:
    delivered = new_event(DELIVERED)
    bot_open = new_event(OPENED, verdict=bot_verdict(BotType.APPLE_MPP))
    click = new_event(CLICKED, campaign_id="spring")

    deltas = engagement_counter_deltas([delivered, bot_open], [delivered, bot_open, click])

    clicked = type_metrics("clicked", events=1, messages=1, human_events=1, human_messages=1)
    whole_pair = (
        type_metrics("delivered", events=1, messages=1, human_events=1, human_messages=1)
        + type_metrics("opened", events=1, messages=1, human_events=0, human_messages=0)
        + clicked
        + Counter({"apple_mpp_opens.events": 1, "apple_mpp_opens.messages": 1, "bot.apple_mpp.opened": 1})
    )
    assert deltas == {**scoped(clicked, "m1"), **scoped(whole_pair, "spring", ScopeKind.CAMPAIGN)}


def test_pair_of_two_campaigns_counts_in_both() -> None:
    spring = new_event(DELIVERED, campaign_id="spring")
    summer = new_event(DELIVERED, campaign_id="summer")
    open_event = new_event(OPENED)

    created = engagement_counter_deltas([], [spring, summer])
    opened = engagement_counter_deltas([spring, summer], [spring, summer, open_event])

    delivered_twice = type_metrics("delivered", events=2, messages=1, human_events=2, human_messages=1)
    assert created == {
        **scoped(delivered_twice, "m1"),
        **scoped(delivered_twice, "spring", ScopeKind.CAMPAIGN),
        **scoped(delivered_twice, "summer", ScopeKind.CAMPAIGN),
    }
    one_open = type_metrics("opened", events=1, messages=1, human_events=1, human_messages=1)
    assert opened == {
        **scoped(one_open, "m1"),
        **scoped(one_open, "spring", ScopeKind.CAMPAIGN),
        **scoped(one_open, "summer", ScopeKind.CAMPAIGN),
    }


def test_apple_mpp_open_counts_once_per_message() -> None:
    apple = bot_verdict(BotType.APPLE_MPP)
    first = new_event(OPENED, verdict=apple)
    second = new_event(OPENED, verdict=apple)

    deltas = engagement_counter_deltas([first], [first, second])

    assert deltas == {
        message_key("opened.events"): 1,
        message_key("apple_mpp_opens.events"): 1,
        message_key("bot.apple_mpp.opened"): 1,
    }


def test_apple_mpp_type_counts_without_bot_flag() -> None:
    # apple_mpp_opens counts an APPLE_MPP open whatever the value of is_bot, but by_bot_type needs is_bot.
    human_with_type = dataclasses.replace(HUMAN, bot_type=BotType.APPLE_MPP)

    deltas = engagement_counter_deltas([], [new_event(OPENED, verdict=human_with_type)])

    assert deltas[message_key("apple_mpp_opens.events")] == 1
    assert deltas[message_key("apple_mpp_opens.messages")] == 1
    assert message_key("bot.apple_mpp.opened") not in deltas


def test_events_of_two_pairs_are_rejected() -> None:
    other_contact = email_event(WORKSPACE, uuid.uuid4(), "m1", DELIVERED)

    with pytest.raises(ValueError, match="one pair, got 2 pairs"):
        engagement_counter_deltas([new_event(DELIVERED)], [new_event(DELIVERED), other_contact])


def test_counts_from_no_counters_are_empty() -> None:
    counts = engagement_counts_from_counters({})

    assert counts == EngagementCounts(human={}, everyone={}, apple_mpp_opens=EventCounts(), by_bot_type={})


def test_counts_from_counters() -> None:
    counters = {
        "delivered.events": 4,
        "delivered.messages": 3,
        "delivered.human_events": 4,
        "delivered.human_messages": 3,
        "opened.events": 5,
        "opened.messages": 2,
        "opened.human_events": 0,
        "opened.human_messages": 0,
        "apple_mpp_opens.events": 3,
        "apple_mpp_opens.messages": 2,
        "bot.apple_mpp.opened": 3,
        "bot.security_scanner.opened": 2,
        "bot.security_scanner.clicked": 0,
        "bot.prefetch.delivered": 1,
        "bot.timing.clicked": 0,
    }

    counts = engagement_counts_from_counters(counters)

    assert counts.everyone == {DELIVERED: EventCounts(4, 3), OPENED: EventCounts(5, 2)}
    assert counts.human == {DELIVERED: EventCounts(4, 3)}
    assert counts.apple_mpp_opens == EventCounts(3, 2)
    # A bot type whose only bot events are deliveries is listed with zeros. One whose counters are all 0 is left out.
    assert counts.by_bot_type == {
        BotType.APPLE_MPP: (3, 0),
        BotType.SECURITY_SCANNER: (2, 0),
        BotType.PREFETCH: (0, 0),
    }


def test_counter_scope_of_message_and_campaign() -> None:
    assert engagement_counter_scope(EngagementScope(message_id="m1", campaign_id=None)) == (ScopeKind.MESSAGE, "m1")
    assert engagement_counter_scope(EngagementScope(message_id=None, campaign_id="c1")) == (ScopeKind.CAMPAIGN, "c1")
    with pytest.raises(ValueError, match="message_id or a campaign_id"):
        engagement_counter_scope(EngagementScope(message_id=None, campaign_id=None))


def test_counter_keys_sort_by_workspace_first() -> None:
    later_workspace = EngagementCounterKey(uuid.UUID(int=2), ScopeKind.CAMPAIGN, "a", "clicked.events")
    earlier_workspace = EngagementCounterKey(uuid.UUID(int=1), ScopeKind.MESSAGE, "z", "opened.events")

    assert sorted([later_workspace, earlier_workspace]) == [earlier_workspace, later_workspace]


# Arbitrary histories: events are added to a few pairs and classified again, in any order.

VERDICTS = [
    HUMAN,
    bot_verdict(BotType.APPLE_MPP),
    bot_verdict(BotType.TIMING),
    bot_verdict(BotType.BEHAVIOR),
    dataclasses.replace(HUMAN, bot_type=BotType.APPLE_MPP),
]
WORKSPACES = [WORKSPACE, uuid.UUID("00000000-0000-4000-8000-000000000002")]
CONTACTS = [CONTACT, uuid.UUID("00000000-0000-4000-8000-0000000000c2")]
MESSAGES = ["m1", "m2"]
CAMPAIGNS = [None, "spring", "summer"]

additions = st.tuples(
    st.just("add"),
    st.sampled_from(WORKSPACES),
    st.sampled_from(CONTACTS),
    st.sampled_from(MESSAGES),
    st.sampled_from(list(EmailEventType)),
    st.sampled_from(CAMPAIGNS),
    st.sampled_from(VERDICTS),
)
# Picks the stored event at this index modulo the number of stored events.
reclassifications = st.tuples(
    st.just("reclassify"), st.integers(min_value=0, max_value=1000), st.sampled_from(VERDICTS)
)
histories = st.lists(st.one_of(additions, reclassifications), max_size=40)


def apply_step(events: list[EmailEvent], step: tuple[object, ...]) -> tuple[list[EmailEvent], list[EmailEvent]]:
    """Apply one step to `events` in place; return the events of the changed pair before and after it."""
    if step[0] == "add":
        _, workspace_id, contact_id, message_id, event_type, campaign_id, verdict = step
        assert isinstance(workspace_id, uuid.UUID)
        assert isinstance(contact_id, uuid.UUID)
        assert isinstance(message_id, str)
        assert isinstance(event_type, EmailEventType)
        assert campaign_id is None or isinstance(campaign_id, str)
        assert isinstance(verdict, EventVerdict)
        changed = email_event(
            workspace_id, contact_id, message_id, event_type, campaign_id=campaign_id, verdict=verdict
        )
        before = pair_events(events, changed)
        events.append(changed)
        return before, pair_events(events, changed)

    _, index, verdict = step
    assert isinstance(index, int)
    assert isinstance(verdict, EventVerdict)
    if not events:
        return [], []
    position = index % len(events)
    before = pair_events(events, events[position])
    events[position] = with_verdict(events[position], verdict)
    return before, pair_events(events, events[position])


def pair_events(events: Sequence[EmailEvent], of: EmailEvent) -> list[EmailEvent]:
    return [
        event
        for event in events
        if (event.workspace_id, event.message_id, event.contact_id) == (of.workspace_id, of.message_id, of.contact_id)
    ]


def scope_counters(counters: Counter[EngagementCounterKey], key: EngagementCounterKey) -> dict[str, int]:
    return {
        counter.metric: value
        for counter, value in counters.items()
        if counter[:3] == (key.workspace_id, key.scope_kind, key.scope_id)
    }


@settings(max_examples=300, deadline=None)
@given(histories)
def test_summed_deltas_match_counts_from_events(steps: list[tuple[object, ...]]) -> None:
    events: list[EmailEvent] = []
    counters: Counter[EngagementCounterKey] = Counter()
    for step in steps:
        before, after = apply_step(events, step)
        counters.update(engagement_counter_deltas(before, after))

    for workspace_id in WORKSPACES:
        for message_id in MESSAGES:
            counts = engagement_counts_from_counters(
                scope_counters(counters, EngagementCounterKey(workspace_id, ScopeKind.MESSAGE, message_id, ""))
            )
            assert counts == expected_engagement_counts(events, workspace_id, message_id=message_id)
        for campaign_id in ("spring", "summer"):
            counts = engagement_counts_from_counters(
                scope_counters(counters, EngagementCounterKey(workspace_id, ScopeKind.CAMPAIGN, campaign_id, ""))
            )
            assert counts == expected_engagement_counts(events, workspace_id, campaign_id=campaign_id)


@settings(max_examples=300, deadline=None)
@given(histories)
def test_summed_deltas_equal_counting_from_scratch(steps: list[tuple[object, ...]]) -> None:
    events: list[EmailEvent] = []
    counters: Counter[EngagementCounterKey] = Counter()
    for step in steps:
        before, after = apply_step(events, step)
        counters.update(engagement_counter_deltas(before, after))

    from_scratch: Counter[EngagementCounterKey] = Counter()
    pairs = {(event.workspace_id, event.message_id, event.contact_id): event for event in events}
    for representative in pairs.values():
        from_scratch.update(engagement_counter_deltas([], pair_events(events, representative)))

    assert {key: value for key, value in counters.items() if value != 0} == dict(from_scratch)
