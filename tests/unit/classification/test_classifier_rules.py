"""Each classification rule on both sides of its edges, and precedence when rules overlap."""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import datetime, timedelta, timezone

import pytest

from server.domain.classification import (
    BotClassifier,
    BotType,
    ClassificationRules,
    Confidence,
    EarlierClick,
    EmailEventFacts,
    EmailEventType,
    NetworkCategory,
    NetworkDirectory,
    NetworkPrefix,
    SignalKind,
    UserAgentMatcher,
)
from server.domain.classification.rules import DEFAULT_SIGNAL_RATINGS, BurstRule, SignalRating
from tests.unit.classification.support import (
    AWS_EC2_ADDRESS,
    CHROME_WINDOWS,
    DELIVERED_AT,
    GMAIL_IMAGE_PROXY,
    SAFARI_IPHONE,
    YAHOO_MAIL_PROXY,
    address,
    build_directory,
    click_event,
    open_event,
)

HOUR = timedelta(hours=1)
RESIDENTIAL = "198.51.100.50"


def clicks_at(*offsets: float, is_human: bool = True) -> tuple[EarlierClick, ...]:
    """Build earlier clicks at these seconds after the first click, an hour after delivery."""
    return tuple(
        EarlierClick(f"click-{number + 1}", DELIVERED_AT + HOUR + timedelta(seconds=offset), is_human)
        for number, offset in enumerate(offsets)
    )


def click_after_first(seconds: float, earlier: tuple[EarlierClick, ...]) -> EmailEventFacts:
    return click_event(CHROME_WINDOWS, RESIDENTIAL, HOUR + timedelta(seconds=seconds), earlier_clicks=earlier)


# Click bursts


def test_two_clicks_in_two_seconds_are_human(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(0.5, clicks_at(0.0)))

    assert verdict.is_bot is False
    assert verdict.reclassify_click_ids == ()


def test_three_clicks_in_two_seconds_are_bots(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(1.0, clicks_at(0.0, 0.5)))

    assert verdict.bot_type is BotType.BEHAVIOR
    assert verdict.confidence is Confidence.HIGH
    assert verdict.signals == ("click_burst",)
    assert verdict.reclassify_click_ids == ("click-1", "click-2")


def test_short_burst_window_includes_its_end(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(2.0, clicks_at(0.0, 1.0)))

    assert verdict.signals == ("click_burst",)
    assert verdict.reclassify_click_ids == ("click-1", "click-2")


def test_short_burst_window_excludes_beyond_end(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(2.001, clicks_at(0.0, 1.0)))

    assert verdict.is_bot is False
    assert verdict.reclassify_click_ids == ()


def test_four_clicks_in_thirty_seconds_are_human(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(27.0, clicks_at(0.0, 9.0, 18.0)))

    assert verdict.is_bot is False


def test_five_clicks_in_thirty_seconds_are_bots(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(28.0, clicks_at(0.0, 7.0, 14.0, 21.0)))

    assert verdict.bot_type is BotType.BEHAVIOR
    assert verdict.reclassify_click_ids == ("click-1", "click-2", "click-3", "click-4")


def test_long_burst_window_includes_its_end(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(30.0, clicks_at(0.0, 7.5, 15.0, 22.5)))

    assert verdict.signals == ("click_burst",)


def test_long_burst_window_excludes_beyond_end(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(30.001, clicks_at(0.0, 7.5, 15.0, 22.5)))

    assert verdict.is_bot is False


def test_burst_lists_only_clicks_stored_as_human(classifier: BotClassifier) -> None:
    earlier = (
        EarlierClick("click-1", DELIVERED_AT + HOUR, is_human=False),
        EarlierClick("click-2", DELIVERED_AT + HOUR + timedelta(seconds=0.3), is_human=True),
    )

    verdict = classifier.classify(click_after_first(0.6, earlier))

    assert verdict.signals == ("click_burst",)
    assert verdict.reclassify_click_ids == ("click-2",)


def test_burst_leaves_older_human_clicks_alone(classifier: BotClassifier) -> None:
    earlier = (
        EarlierClick("yesterday", DELIVERED_AT, is_human=True),
        *clicks_at(0.0, 0.4),
    )

    verdict = classifier.classify(click_after_first(0.8, earlier))

    assert verdict.reclassify_click_ids == ("click-1", "click-2")


def test_click_after_finished_burst_is_human(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_after_first(5.0, clicks_at(0.0, 0.5, 1.0, is_human=False)))

    assert verdict.is_bot is False


def test_burst_counts_clicks_stored_out_of_order(classifier: BotClassifier) -> None:
    # The second click arrived before the new one although it happened later.
    verdict = classifier.classify(click_after_first(0.0, clicks_at(-0.5, 0.7)))

    assert verdict.signals == ("click_burst",)
    assert verdict.reclassify_click_ids == ("click-1", "click-2")


def test_opens_never_form_bursts(classifier: BotClassifier) -> None:
    event = dataclasses.replace(click_after_first(1.0, clicks_at(0.0, 0.5)), event_type=EmailEventType.OPENED)

    verdict = classifier.classify(event)

    assert verdict.is_bot is False
    assert verdict.reclassify_click_ids == ()


# Timing after delivery


@pytest.mark.parametrize("seconds", [0.0, 9.9, 10.0])
def test_click_within_ten_seconds_is_timing_bot(classifier: BotClassifier, seconds: float) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=seconds)))

    assert verdict.bot_type is BotType.TIMING
    assert verdict.confidence is Confidence.LOW
    assert verdict.signals == ("click_soon_after_delivery",)


def test_click_after_ten_seconds_is_human(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=10.1)))

    assert verdict.is_bot is False


def test_click_before_delivery_is_timing_bot(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=-1)))

    assert verdict.bot_type is BotType.TIMING
    assert verdict.signals == ("click_before_delivery",)


def test_click_without_delivery_time_has_no_timing_signal(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=1), delivered_at=None))

    assert verdict.is_bot is False


def test_early_open_from_browser_is_human(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=1)))

    assert verdict.is_bot is False


def test_timing_compares_across_utc_offsets(classifier: BotClassifier) -> None:
    berlin = timezone(timedelta(hours=1))
    event = dataclasses.replace(
        click_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=5)),
        delivered_at=DELIVERED_AT.astimezone(berlin),
    )

    verdict = classifier.classify(event)

    assert verdict.signals == ("click_soon_after_delivery",)


# Apple Mail Privacy Protection


def test_bare_mozilla_open_is_apple_mpp_medium(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Mozilla/5.0", "203.0.113.80", HOUR))

    assert verdict.bot_type is BotType.APPLE_MPP
    assert verdict.confidence is Confidence.MEDIUM
    assert verdict.signals == ("apple_mpp_user_agent",)


def test_apple_mpp_open_over_ipv6_relay(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Mozilla/5.0", "2a02:26f7:b000:4000::1", HOUR))

    assert verdict.bot_type is BotType.APPLE_MPP
    assert verdict.confidence is Confidence.HIGH


def test_mozilla_with_trailing_space_is_not_apple_mpp(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Mozilla/5.0 ", "172.224.226.5", HOUR))

    assert verdict.is_bot is False


def test_browser_open_through_private_relay_is_human(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(SAFARI_IPHONE, "172.224.226.5", HOUR))

    assert verdict.is_bot is False


def test_bare_mozilla_click_is_not_apple_mpp(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event("Mozilla/5.0", "172.224.226.5", HOUR))

    assert verdict.is_bot is False


def test_apple_mpp_outranks_datacenter(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Mozilla/5.0", AWS_EC2_ADDRESS, HOUR))

    assert verdict.bot_type is BotType.APPLE_MPP
    assert verdict.signals == ("apple_mpp_user_agent", "datacenter_network:aws")


# Mail image proxies


def test_gmail_proxy_open_beats_datacenter_list(user_agent_matcher: UserAgentMatcher) -> None:
    classifier = BotClassifier(build_directory(google_as_datacenter=True), user_agent_matcher)

    verdict = classifier.classify(open_event(GMAIL_IMAGE_PROXY, "66.249.83.210", HOUR))

    assert verdict.is_bot is False


def test_gmail_proxy_user_agent_from_aws_is_bot(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(GMAIL_IMAGE_PROXY, AWS_EC2_ADDRESS, HOUR))

    assert verdict.bot_type is BotType.USER_AGENT
    assert verdict.signals == ("bot_user_agent", "datacenter_network:aws")


def test_yahoo_proxy_user_agent_from_aws_is_bot(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(YAHOO_MAIL_PROXY, AWS_EC2_ADDRESS, HOUR))

    assert verdict.signals == ("bot_user_agent", "datacenter_network:aws")


def test_gmail_proxy_from_scanner_is_bot(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(GMAIL_IMAGE_PROXY, "40.107.218.12", HOUR))

    assert verdict.bot_type is BotType.SECURITY_SCANNER
    assert verdict.signals == ("security_scanner_network:microsoft", "bot_user_agent")


def test_gmail_proxy_click_is_bot(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(GMAIL_IMAGE_PROXY, "66.249.83.210", HOUR))

    assert verdict.bot_type is BotType.USER_AGENT
    assert verdict.signals == ("bot_user_agent", "mail_image_proxy_network:google")


def test_click_from_image_proxy_is_datacenter(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, "66.249.83.210", HOUR))

    assert verdict.bot_type is BotType.DATACENTER
    assert verdict.signals == ("mail_image_proxy_network:google",)


def test_proxy_token_does_not_excuse_other_bot_patterns(classifier: BotClassifier) -> None:
    user_agent = "GoogleImageProxy python-requests/2.32.3"

    verdict = classifier.classify(open_event(user_agent, "66.249.83.210", HOUR))

    assert verdict.signals == ("bot_user_agent",)


def test_proxy_open_with_head_request_is_prefetch(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(GMAIL_IMAGE_PROXY, "66.249.83.210", HOUR, http_method="HEAD"))

    assert verdict.bot_type is BotType.PREFETCH
    assert verdict.signals == ("head_request",)


# Networks, addresses and request details


def test_scanner_open_is_security_scanner(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(CHROME_WINDOWS, "40.107.1.1", HOUR))

    assert verdict.bot_type is BotType.SECURITY_SCANNER
    assert verdict.confidence is Confidence.HIGH


def test_datacenter_open_is_datacenter(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event(CHROME_WINDOWS, AWS_EC2_ADDRESS, HOUR))

    assert verdict.bot_type is BotType.DATACENTER
    assert verdict.confidence is Confidence.MEDIUM


@pytest.mark.parametrize(
    ("ip", "signal"),
    [
        pytest.param("2a01:111:f400::1", "security_scanner_network:microsoft", id="ipv6-scanner"),
        pytest.param("::ffff:40.107.218.12", "security_scanner_network:microsoft", id="ipv4-mapped-scanner"),
        pytest.param("::ffff:3.5.140.10", "datacenter_network:aws", id="ipv4-mapped-datacenter"),
    ],
)
def test_ipv6_click_addresses(classifier: BotClassifier, ip: str, signal: str) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, ip, HOUR))

    assert verdict.signals == (signal,)


def test_apple_mpp_open_over_ipv4_mapped_relay(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Mozilla/5.0", "::ffff:172.224.226.5", HOUR))

    assert verdict.confidence is Confidence.HIGH
    assert verdict.signals == ("apple_mpp_proxy", "apple_mpp_user_agent")


def test_click_without_address_is_judged_on_other_facts(classifier: BotClassifier) -> None:
    assert classifier.classify(click_event(CHROME_WINDOWS, None, HOUR)).is_bot is False
    assert classifier.classify(click_event("curl/8.5.0", None, HOUR)).signals == ("bot_user_agent",)


@pytest.mark.parametrize("method", ["HEAD", "head", " Head "])
def test_head_method_in_any_case_is_prefetch(classifier: BotClassifier, method: str) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, HOUR, http_method=method))

    assert verdict.signals == ("head_request",)


@pytest.mark.parametrize("method", ["GET", "", "POST"])
def test_other_methods_are_no_signal(classifier: BotClassifier, method: str) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, HOUR, http_method=method))

    assert verdict.is_bot is False


def test_whitespace_user_agent_counts_as_empty(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event("   ", RESIDENTIAL, HOUR))

    assert verdict.signals == ("empty_user_agent",)


def test_delivered_event_is_never_a_bot(classifier: BotClassifier) -> None:
    event = dataclasses.replace(
        click_event("python-requests/2.32.3", "40.107.218.12", timedelta(0), http_method="HEAD", is_honeypot_link=True),
        event_type=EmailEventType.DELIVERED,
    )

    verdict = classifier.classify(event)

    assert verdict.is_bot is False
    assert verdict.signals == ()


def test_honeypot_flag_on_open_is_ignored(classifier: BotClassifier) -> None:
    event = dataclasses.replace(open_event(CHROME_WINDOWS, RESIDENTIAL, HOUR), is_honeypot_link=True)

    assert classifier.classify(event).is_bot is False


# Precedence and confidence when several signals fire


def test_honeypot_outranks_every_other_signal(classifier: BotClassifier) -> None:
    event = click_event("python-requests/2.32.3", AWS_EC2_ADDRESS, timedelta(seconds=2), is_honeypot_link=True)

    verdict = classifier.classify(event)

    assert verdict.bot_type is BotType.HONEYPOT
    assert verdict.confidence is Confidence.HIGH
    assert verdict.signals == (
        "honeypot_link",
        "bot_user_agent",
        "datacenter_network:aws",
        "click_soon_after_delivery",
    )


def test_scanner_outranks_burst(classifier: BotClassifier) -> None:
    event = click_event(CHROME_WINDOWS, "40.107.218.12", HOUR + timedelta(seconds=1), earlier_clicks=clicks_at(0, 0.5))

    verdict = classifier.classify(event)

    assert verdict.bot_type is BotType.SECURITY_SCANNER
    assert verdict.signals == ("security_scanner_network:microsoft", "click_burst")
    assert verdict.reclassify_click_ids == ("click-1", "click-2")


def test_burst_outranks_datacenter(classifier: BotClassifier) -> None:
    event = click_event(CHROME_WINDOWS, AWS_EC2_ADDRESS, HOUR + timedelta(seconds=1), earlier_clicks=clicks_at(0, 0.5))

    verdict = classifier.classify(event)

    assert verdict.bot_type is BotType.BEHAVIOR
    assert verdict.signals == ("click_burst", "datacenter_network:aws")


def test_prefetch_outranks_user_agent(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event("curl/8.5.0", RESIDENTIAL, HOUR, http_method="HEAD"))

    assert verdict.bot_type is BotType.PREFETCH
    assert verdict.signals == ("head_request", "bot_user_agent")


def test_datacenter_raises_timing_confidence(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, AWS_EC2_ADDRESS, timedelta(seconds=3)))

    assert verdict.bot_type is BotType.DATACENTER
    assert verdict.confidence is Confidence.MEDIUM
    assert verdict.signals == ("datacenter_network:aws", "click_soon_after_delivery")


def test_custom_precedence_changes_type_not_confidence(user_agent_matcher: UserAgentMatcher) -> None:
    timing_first = (BotType.TIMING, *(bot_type for bot_type in BotType if bot_type is not BotType.TIMING))
    rules = ClassificationRules(bot_type_precedence=timing_first)
    classifier = BotClassifier(build_directory(), user_agent_matcher, rules)

    verdict = classifier.classify(click_event(CHROME_WINDOWS, "40.107.218.12", timedelta(seconds=1)))

    assert verdict.bot_type is BotType.TIMING
    assert verdict.confidence is Confidence.HIGH
    assert verdict.signals == ("click_soon_after_delivery", "security_scanner_network:microsoft")


def test_custom_thresholds_apply(user_agent_matcher: UserAgentMatcher) -> None:
    rules = ClassificationRules(
        click_bursts=(BurstRule(min_clicks=2, window=timedelta(seconds=1)),),
        soon_after_delivery=timedelta(seconds=30),
    )
    classifier = BotClassifier(build_directory(), user_agent_matcher, rules)

    assert classifier.classify(click_after_first(0.5, clicks_at(0.0))).signals == ("click_burst",)
    assert classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, timedelta(seconds=20))).is_bot is True


# Versions, provider names and input checks


def test_verdict_records_rules_and_pattern_versions(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, RESIDENTIAL, HOUR))

    assert verdict.classifier_version == "rules-1/crawler-user-agents-1.67.0+topmail-1"


def test_provider_names_become_snake_case(user_agent_matcher: UserAgentMatcher) -> None:
    prefix = NetworkPrefix(
        ipaddress.ip_network("192.0.2.0/24"), NetworkCategory.SECURITY_SCANNER, "Microsoft Defender-Safe Links"
    )
    classifier = BotClassifier(NetworkDirectory([prefix]), user_agent_matcher)

    verdict = classifier.classify(click_event(CHROME_WINDOWS, "192.0.2.9", HOUR))

    assert verdict.signals == ("security_scanner_network:microsoft_defender_safe_links",)


def test_naive_event_time_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"EmailEventFacts\.occurred_at is a naive datetime"):
        EmailEventFacts(EmailEventType.OPENED, datetime(2025, 3, 4, 9, 0), address(RESIDENTIAL), CHROME_WINDOWS)


def test_naive_earlier_click_time_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"EarlierClick\.occurred_at is a naive datetime"):
        EarlierClick("click-1", datetime(2025, 3, 4, 9, 0), is_human=True)


def test_rules_reject_incomplete_precedence() -> None:
    with pytest.raises(ValueError, match="bot_type_precedence must list every BotType"):
        ClassificationRules(bot_type_precedence=(BotType.HONEYPOT,))


def test_rules_reject_single_click_burst() -> None:
    with pytest.raises(ValueError, match="a burst needs at least 2 clicks"):
        ClassificationRules(click_bursts=(BurstRule(min_clicks=1, window=timedelta(seconds=2)),))


def test_rules_reject_missing_signal_rating() -> None:
    ratings: dict[SignalKind, SignalRating] = {
        kind: rating for kind, rating in DEFAULT_SIGNAL_RATINGS.items() if kind is not SignalKind.CLICK_BURST
    }

    with pytest.raises(ValueError, match="signal_ratings lacks a rating for: click_burst"):
        ClassificationRules(signal_ratings=ratings)
