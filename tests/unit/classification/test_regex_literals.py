"""Literal extraction that the user-agent index relies on."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain.classification._regex_literals import required_literals, split_alternatives
from server.domain.classification.crawler_patterns import (
    ADDITIONAL_USER_AGENT_PATTERNS,
    load_crawler_user_agent_patterns,
)


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"Googlebot\/", ["Googlebot/"]),
        (r"^curl", ["curl"]),
        (r"[wW]get", ["get"]),
        (r"S[eE][mM]rushBot", ["S", "rushBot"]),
        (r"(sistrix|SISTRIX) [cC]rawler", [" ", "rawler"]),
        (r"ab?c", ["a", "c"]),
        (r"ab*c", ["a", "c"]),
        (r"ab+c", ["ab", "c"]),
        (r"ab{2}c", ["a", "c"]),
        (r"ab{,3}c", ["a", "c"]),
        (r"a{b", ["a", "b"]),
        (r"a\.?b", ["a", "b"]),
        (r"x\dy", ["x", "y"]),
        (r"\bfoo\b", ["foo"]),
        (r"a.b$", ["a", "b"]),
        (r"(?:ab)?cd", ["cd"]),
        (r"pre[)(|]post", ["pre", "post"]),
        (r"a(b\)c)d", ["a", "d"]),
    ],
)
def test_required_literals(pattern: str, literals: list[str]) -> None:
    assert required_literals(pattern) == literals


@pytest.mark.parametrize("pattern", [r"foo|bar", r"(?i)bot", r"(a)\1x", r"(?P<word>ab)(?P=word)"])
def test_no_literals_when_none_is_guaranteed(pattern: str) -> None:
    assert required_literals(pattern) == []


def test_split_alternatives_at_top_level_only() -> None:
    assert split_alternatives(r"a|b(c|d)|[|]|e\|f") == ["a", "b(c|d)", "[|]", r"e\|f"]


def test_split_alternatives_keeps_patterns_with_references() -> None:
    assert split_alternatives(r"(a)\1|b") == [r"(a)\1|b"]


ALL_PATTERNS = sorted(
    {pattern.pattern for pattern in load_crawler_user_agent_patterns() + ADDITIONAL_USER_AGENT_PATTERNS}
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_literals_occur_in_every_match(data: st.DataObject) -> None:
    pattern = data.draw(st.sampled_from(ALL_PATTERNS), label="pattern")
    for alternative in split_alternatives(pattern):
        text = data.draw(st.from_regex(re.compile(alternative)), label="text")
        for literal in required_literals(alternative):
            assert literal in text
