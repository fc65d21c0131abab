"""The indexed user-agent matcher against the published pattern list and plain regex search."""

from __future__ import annotations

import importlib.resources
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.classification import UserAgentCategory, UserAgentMatcher, UserAgentPattern
from server.domain.classification.crawler_patterns import (
    ADDITIONAL_USER_AGENT_PATTERNS,
    load_crawler_user_agent_patterns,
)


def load_published_examples() -> list[str]:
    """Read the example user agents that crawler-user-agents lists for its patterns."""
    data_file = importlib.resources.files("crawleruseragents").joinpath("crawler-user-agents.json")
    entries: list[dict[str, Any]] = json.loads(data_file.read_text(encoding="utf-8"))
    return [str(example) for entry in entries for example in entry["instances"]]


PUBLISHED_EXAMPLES = load_published_examples()
BOT_REGEXES = [
    re.compile(pattern.pattern)
    for pattern in load_crawler_user_agent_patterns() + ADDITIONAL_USER_AGENT_PATTERNS
    if pattern.category is UserAgentCategory.BOT
]

HUMAN_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1"
    " Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Outlook-iOS/723.4027091.prod.iphone (4.2402.0)",
    "Mozilla/5.0 (X11; Linux i686; rv:17.0) Gecko/20130330 Thunderbird/17.0.5",
    "Mozilla/5.0",
]


def test_every_published_example_is_a_bot(user_agent_matcher: UserAgentMatcher) -> None:
    missed = [example for example in PUBLISHED_EXAMPLES if not user_agent_matcher.match(example).is_bot]

    assert len(PUBLISHED_EXAMPLES) > 2000
    assert missed == []


@pytest.mark.parametrize("user_agent", HUMAN_USER_AGENTS)
def test_browsers_and_mail_clients_are_not_bots(user_agent_matcher: UserAgentMatcher, user_agent: str) -> None:
    match = user_agent_matcher.match(user_agent)

    assert match.is_bot is False
    assert match.security_scanners == ()


@pytest.mark.parametrize(
    "user_agent",
    [
        "Java/17.0.1",
        "Dart/3.3 (dart:io)",
        "Deno/1.40.0",
        "Bun/1.1.0",
        "Ruby",
        "PycURL/7.45.2 libcurl/8.5.0",
        "python-urllib3/2.0.7",
        "GuzzleHttp/7",
        "PostmanRuntime/7.36.0",
        "lua-resty-http/0.17.1 ngx_lua/10026",
        "Mozilla/5.0 (linux) AppleWebKit/537.36 (KHTML, like Gecko) jsdom/22.1.0",
    ],
)
def test_additional_http_clients_are_bots(user_agent_matcher: UserAgentMatcher, user_agent: str) -> None:
    assert user_agent_matcher.match(user_agent).is_bot is True


@pytest.mark.parametrize(
    ("user_agent", "provider"),
    [
        ("Barracuda Sentinel (EE)", "barracuda"),
        ("Kaspersky Lab CFR link resolver", "kaspersky"),
    ],
)
def test_scanner_user_agents_name_their_provider(
    user_agent_matcher: UserAgentMatcher, user_agent: str, provider: str
) -> None:
    match = user_agent_matcher.match(user_agent)

    assert match.security_scanners == (provider,)
    assert match.is_bot is False


def test_matcher_reports_bot_and_scanner_together() -> None:
    matcher = UserAgentMatcher(
        [
            UserAgentPattern("curl/", UserAgentCategory.BOT),
            UserAgentPattern("Scanner[0-9]", UserAgentCategory.SECURITY_SCANNER, "zeta"),
            UserAgentPattern("^Probe", UserAgentCategory.SECURITY_SCANNER, "alpha"),
        ],
        version="test",
    )

    match = matcher.match("Probe curl/8.5.0 Scanner7")

    assert match.is_bot is True
    assert match.security_scanners == ("alpha", "zeta")


def test_patterns_without_literals_are_still_searched() -> None:
    matcher = UserAgentMatcher([UserAgentPattern("[0-9]{4}-[0-9]{2}", UserAgentCategory.BOT)], version="test")

    assert matcher.match("Build 2024-05").is_bot is True
    assert matcher.match("Build 24-05").is_bot is False


def test_top_level_alternatives_are_each_found() -> None:
    matcher = UserAgentMatcher([UserAgentPattern("Automaton|Newsify Feed Fetcher", UserAgentCategory.BOT)], "test")

    assert matcher.match("Newsify Feed Fetcher 2.0").is_bot is True
    assert matcher.match("Automaton/1").is_bot is True
    assert matcher.match("Newsify").is_bot is False


fragments = st.sampled_from(PUBLISHED_EXAMPLES + HUMAN_USER_AGENTS).flatmap(
    lambda example: st.tuples(st.integers(0, len(example)), st.integers(0, len(example))).map(
        lambda bounds: example[min(bounds) : max(bounds)]
    )
)
user_agent_texts = st.lists(st.one_of(fragments, st.text(max_size=12)), max_size=4).map("".join)


@settings(max_examples=300, deadline=None)
@given(user_agent=user_agent_texts)
def test_matcher_equals_plain_search(user_agent_matcher: UserAgentMatcher, user_agent: str) -> None:
    expected = any(regex.search(user_agent) for regex in BOT_REGEXES)

    assert user_agent_matcher.match(user_agent).is_bot is expected
