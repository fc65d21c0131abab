"""User-agent patterns and the matcher that tests a user agent against all of them."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from server.domain.classification._regex_literals import (
    required_literals,
    split_alternatives,
)

# Length of the literal keys that select which patterns a match searches.
_KEY_LENGTH = 3

# Ordinary browser and mail-client user agents. The index prefers keys that do
# not occur in them, so these common user agents select few candidate patterns.
# The list affects only speed, never which patterns match.
_TYPICAL_HUMAN_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
)


class UserAgentCategory(enum.Enum):
    """Kind of client that a user-agent pattern identifies."""

    # Crawlers, HTTP libraries and tools, link-preview fetchers, headless browsers.
    BOT = "bot"
    # Link and attachment scanners of mail security gateways.
    SECURITY_SCANNER = "security_scanner"


@dataclass(frozen=True, slots=True)
class UserAgentPattern:
    """A case-sensitive Python regular expression searched anywhere in a user agent."""

    pattern: str
    category: UserAgentCategory
    # Operator of a security scanner, used in signal names. Empty for bots.
    provider: str = ""


@dataclass(frozen=True, slots=True)
class UserAgentMatch:
    """Result of matching one user agent against every pattern."""

    is_bot: bool
    # Providers of the matching SECURITY_SCANNER patterns, sorted.
    security_scanners: tuple[str, ...]


_NO_MATCH = UserAgentMatch(is_bot=False, security_scanners=())

_Label = tuple[UserAgentCategory, str]
_Entry = tuple[_Label, re.Pattern[str]]


class UserAgentMatcher:
    """Compiled user-agent patterns, indexed by a literal each pattern's matches contain.

    A match searches only the patterns whose 3-character key occurs in the user
    agent, plus the few patterns without a usable literal. The result equals
    searching every pattern. A typical browser user agent takes 10 to 20
    microseconds, against about 1 millisecond for one alternation of all
    patterns (measured with timeit on CPython 3.11 and a 2-core Xeon).
    """

    def __init__(self, patterns: Iterable[UserAgentPattern], version: str) -> None:
        self.version = version
        self.pattern_count = 0
        common_keys = {
            user_agent[start : start + _KEY_LENGTH]
            for user_agent in _TYPICAL_HUMAN_USER_AGENTS
            for start in range(len(user_agent) - _KEY_LENGTH + 1)
        }
        index: dict[str, list[_Entry]] = {}
        unindexed: list[_Entry] = []

        for user_agent_pattern in patterns:
            self.pattern_count += 1
            label = (user_agent_pattern.category, user_agent_pattern.provider)
            for alternative in split_alternatives(user_agent_pattern.pattern):
                entry = (label, re.compile(alternative))
                key = _choose_key(alternative, common_keys)
                if key is None:
                    unindexed.append(entry)
                else:
                    index.setdefault(key, []).append(entry)

        self._index = {key: tuple(entries) for key, entries in index.items()}
        self._keys = frozenset(self._index)
        self._unindexed = tuple(unindexed)

    def match(self, user_agent: str) -> UserAgentMatch:
        """Return whether any BOT pattern and which SECURITY_SCANNER patterns match."""
        grams = {user_agent[start : start + _KEY_LENGTH] for start in range(len(user_agent) - _KEY_LENGTH + 1)}
        found: set[_Label] = set()
        for key in self._keys.intersection(grams):
            _search_entries(self._index[key], user_agent, found)
        _search_entries(self._unindexed, user_agent, found)
        if not found:
            return _NO_MATCH

        return UserAgentMatch(
            is_bot=any(category is UserAgentCategory.BOT for category, _ in found),
            security_scanners=tuple(
                sorted(provider for category, provider in found if category is UserAgentCategory.SECURITY_SCANNER)
            ),
        )


def _search_entries(entries: Iterable[_Entry], user_agent: str, found: set[_Label]) -> None:
    for label, regex in entries:
        if label not in found and regex.search(user_agent):
            found.add(label)


def _choose_key(pattern: str, common_keys: set[str]) -> str | None:
    """Pick a key from the pattern's required literals, preferring keys rare in browsers."""
    candidates: list[tuple[bool, int, str]] = []
    for run in required_literals(pattern):
        for start in range(len(run) - _KEY_LENGTH + 1):
            key = run[start : start + _KEY_LENGTH]
            candidates.append((key in common_keys, -len(run), key))
    if not candidates:
        return None
    return min(candidates)[2]
