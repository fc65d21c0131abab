"""Real-world opens, clicks and click sequences with the verdict a user expects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.classification import (
    BotClassifier,
    BotType,
    Confidence,
    EarlierClick,
    Verdict,
    has_prefetch_header,
)
from tests.unit.classification.support import (
    AWS_EC2_ADDRESS,
    CHROME_WINDOWS,
    DELIVERED_AT,
    GMAIL_IMAGE_PROXY,
    SAFARI_IPHONE,
    YAHOO_MAIL_PROXY,
    click_event,
    open_event,
)

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def assert_human(verdict: Verdict) -> None:
    assert verdict.is_bot is False
    assert verdict.bot_type is None
    assert verdict.confidence is None
    assert verdict.signals == ()


def assert_bot(verdict: Verdict, bot_type: BotType, confidence: Confidence, *signals: str) -> None:
    assert verdict.is_bot is True
    assert verdict.bot_type is bot_type
    assert verdict.confidence is confidence
    for signal in signals:
        assert signal in verdict.signals


@pytest.mark.parametrize(
    ("user_agent", "ip", "after"),
    [
        pytest.param(GMAIL_IMAGE_PROXY, "66.249.83.210", 4 * MINUTE, id="O1-gmail-image-proxy"),
        pytest.param(YAHOO_MAIL_PROXY, "203.0.113.20", 7 * MINUTE, id="O2-yahoo-mail-proxy"),
        pytest.param(
            "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.6106; Pro; ms-office; MSOffice 14)",
            "198.51.100.23",
            HOUR,
            id="O3-outlook-desktop",
        ),
        pytest.param(
            "Mozilla/5.0 (X11; Linux i686; rv:17.0) Gecko/20130330 Thunderbird/17.0.5",
            "2001:db8::7",
            2 * HOUR,
            id="O5-thunderbird-ipv6",
        ),
    ],
)
def test_human_opens(classifier: BotClassifier, user_agent: str, ip: str, after: timedelta) -> None:
    assert_human(classifier.classify(open_event(user_agent, ip, after)))


def test_apple_mpp_open(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Mozilla/5.0", "172.224.226.5", 3 * SECOND))

    assert_bot(verdict, BotType.APPLE_MPP, Confidence.HIGH)
    assert verdict.signals == ("apple_mpp_proxy", "apple_mpp_user_agent")


def test_slack_image_proxy_open(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("Slack-ImgProxy (+https://api.slack.com/robots)", "203.0.113.40", DAY))

    assert_bot(verdict, BotType.USER_AGENT, Confidence.HIGH)
    assert verdict.signals == ("bot_user_agent",)


def test_empty_user_agent_open(classifier: BotClassifier) -> None:
    verdict = classifier.classify(open_event("", "198.51.100.9", HOUR))

    assert_bot(verdict, BotType.USER_AGENT, Confidence.MEDIUM)
    assert verdict.signals == ("empty_user_agent",)


@pytest.mark.parametrize(
    ("user_agent", "ip", "after"),
    [
        pytest.param(SAFARI_IPHONE, "203.0.113.7", 20 * MINUTE, id="C1-iphone-safari"),
        pytest.param(CHROME_WINDOWS, "198.51.100.50", 3 * HOUR, id="C2-chrome-windows"),
    ],
)
def test_human_clicks(classifier: BotClassifier, user_agent: str, ip: str, after: timedelta) -> None:
    assert_human(classifier.classify(click_event(user_agent, ip, after)))


def test_microsoft_eop_click_one_second_after_delivery(classifier: BotClassifier) -> None:
    old_chrome = (
        "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/57.0.2987.133 Safari/537.36"
    )

    verdict = classifier.classify(click_event(old_chrome, "40.107.218.12", SECOND))

    assert_bot(verdict, BotType.SECURITY_SCANNER, Confidence.HIGH)
    assert verdict.signals == ("security_scanner_network:microsoft", "click_soon_after_delivery")


def test_barracuda_sentinel_click(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event("Barracuda Sentinel (EE)", "203.0.113.61", 5 * MINUTE))

    assert_bot(verdict, BotType.SECURITY_SCANNER, Confidence.HIGH)
    assert verdict.signals == ("security_scanner_user_agent:barracuda",)


@pytest.mark.parametrize(
    ("user_agent", "ip", "after"),
    [
        pytest.param("python-requests/2.32.3", "203.0.113.62", 5 * MINUTE, id="C5-python-requests"),
        pytest.param("curl/7.54.0", "203.0.113.63", 5 * MINUTE, id="C6-curl"),
        pytest.param(
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "203.0.113.64", 2 * HOUR, id="C8-slackbot"
        ),
        pytest.param(
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "203.0.113.65",
            2 * HOUR,
            id="C9-facebook",
        ),
    ],
)
def test_bot_user_agent_clicks(classifier: BotClassifier, user_agent: str, ip: str, after: timedelta) -> None:
    verdict = classifier.classify(click_event(user_agent, ip, after))

    assert_bot(verdict, BotType.USER_AGENT, Confidence.HIGH)
    assert verdict.signals == ("bot_user_agent",)


def test_googlebot_click_from_google_network(classifier: BotClassifier) -> None:
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

    verdict = classifier.classify(click_event(googlebot, "66.249.66.1", DAY))

    assert_bot(verdict, BotType.USER_AGENT, Confidence.HIGH)
    assert verdict.signals == ("bot_user_agent", "mail_image_proxy_network:google")


def test_browser_click_from_aws(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, AWS_EC2_ADDRESS, HOUR))

    assert_bot(verdict, BotType.DATACENTER, Confidence.MEDIUM)
    assert verdict.signals == ("datacenter_network:aws",)


def test_head_request_click(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, "198.51.100.50", HOUR, http_method="HEAD"))

    assert_bot(verdict, BotType.PREFETCH, Confidence.HIGH)
    assert verdict.signals == ("head_request",)


def test_prefetch_header_click(classifier: BotClassifier) -> None:
    prefetch = has_prefetch_header({"Sec-Purpose": "prefetch"})

    verdict = classifier.classify(click_event(CHROME_WINDOWS, "198.51.100.50", HOUR, has_prefetch_header=prefetch))

    assert_bot(verdict, BotType.PREFETCH, Confidence.HIGH)
    assert verdict.signals == ("prefetch_header",)


def test_six_fast_clicks_all_become_bots(classifier: BotClassifier) -> None:
    # Plays the store: each click is classified with the clicks stored before it,
    # and the verdict's re-classifications are applied to the stored clicks.
    first_click = DELIVERED_AT + HOUR
    stored: dict[str, EarlierClick] = {}
    verdicts: list[Verdict] = []
    for number in range(6):
        click_id = f"click-{number + 1}"
        after = HOUR + number * timedelta(seconds=0.3)
        event = click_event(CHROME_WINDOWS, "198.51.100.50", after, earlier_clicks=tuple(stored.values()))
        verdict = classifier.classify(event)
        verdicts.append(verdict)
        stored[click_id] = EarlierClick(click_id, first_click + number * timedelta(seconds=0.3), not verdict.is_bot)
        for reclassified_id in verdict.reclassify_click_ids:
            previous = stored[reclassified_id]
            stored[reclassified_id] = EarlierClick(previous.click_id, previous.occurred_at, is_human=False)

    assert [verdict.is_bot for verdict in verdicts] == [False, False, True, True, True, True]
    assert verdicts[2].reclassify_click_ids == ("click-1", "click-2")
    for verdict in verdicts[2:]:
        assert_bot(verdict, BotType.BEHAVIOR, Confidence.HIGH, "click_burst")
    for verdict in verdicts[3:]:
        assert verdict.reclassify_click_ids == ()
    assert [click.is_human for click in stored.values()] == [False] * 6


def test_same_link_clicked_minutes_apart_stays_human(classifier: BotClassifier) -> None:
    earlier: list[EarlierClick] = []
    for number in range(3):
        after = HOUR + number * 4 * MINUTE
        verdict = classifier.classify(click_event(SAFARI_IPHONE, "203.0.113.7", after, earlier_clicks=tuple(earlier)))

        assert_human(verdict)
        assert verdict.reclassify_click_ids == ()
        earlier.append(EarlierClick(f"click-{number + 1}", DELIVERED_AT + after, is_human=True))


def test_honeypot_click_from_browser(classifier: BotClassifier) -> None:
    verdict = classifier.classify(click_event(CHROME_WINDOWS, "198.51.100.50", HOUR, is_honeypot_link=True))

    assert_bot(verdict, BotType.HONEYPOT, Confidence.HIGH)
    assert verdict.signals == ("honeypot_link",)
