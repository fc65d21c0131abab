"""Bot user-agent patterns: the crawler-user-agents list plus this project's additions.

The published list comes from the PyPI package crawler-user-agents, version
1.67.0 (source: github.com/monperrus/crawler-user-agents, MIT license). It was
chosen over crawlerdetect 0.4.2 for two reasons. It ships plain data (a JSON list
of patterns, each with example user agents and tags), which we compile our own
way. And crawlerdetect lists mail clients as crawlers ("Microsoft Outlook",
"MacOutlook/", "Outlook-iOS"), which would turn real opens in Outlook into bots.

Reading the package's data file is the only I/O here. Call
`load_user_agent_matcher` once at startup.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json

from server.domain.classification.user_agents import (
    UserAgentCategory,
    UserAgentMatcher,
    UserAgentPattern,
)

CRAWLER_USER_AGENTS_DISTRIBUTION = "crawler-user-agents"
_CRAWLER_USER_AGENTS_PACKAGE = "crawleruseragents"
_CRAWLER_USER_AGENTS_FILE = "crawler-user-agents.json"

# Bump when ADDITIONAL_USER_AGENT_PATTERNS changes, so verdicts record the change.
ADDITIONS_VERSION = "1"

_BOT = UserAgentCategory.BOT
_SCANNER = UserAgentCategory.SECURITY_SCANNER

# Patterns that crawler-user-agents 1.67.0 lacks. Each bot entry is the default
# user agent of an HTTP client library or tool.
ADDITIONAL_USER_AGENT_PATTERNS: tuple[UserAgentPattern, ...] = (
    UserAgentPattern(r"^Java/\d", _BOT),  # java.net.HttpURLConnection
    UserAgentPattern(r"^Dart/[\d.]+ \(dart:io\)", _BOT),  # Dart HttpClient
    UserAgentPattern(r"^Deno/\d", _BOT),  # Deno fetch
    UserAgentPattern(r"^Bun/\d", _BOT),  # Bun fetch
    UserAgentPattern(r"^Ruby$", _BOT),  # Ruby Net::HTTP
    UserAgentPattern(r"PycURL/", _BOT),
    UserAgentPattern(r"libcurl/", _BOT),
    UserAgentPattern(r"python-urllib3/", _BOT),
    UserAgentPattern(r"GuzzleHttp/", _BOT),  # PHP Guzzle
    UserAgentPattern(r"PostmanRuntime/", _BOT),
    UserAgentPattern(r"lua-resty-http/", _BOT),
    UserAgentPattern(r"jsdom/", _BOT),  # headless DOM for Node.js
    UserAgentPattern(r"Barracuda Sentinel", _SCANNER, "barracuda"),
    UserAgentPattern(r"Kaspersky Lab CFR link resolver", _SCANNER, "kaspersky"),
)


def load_crawler_user_agent_patterns() -> tuple[UserAgentPattern, ...]:
    """Read the patterns of the installed crawler-user-agents package as BOT patterns."""
    data_file = importlib.resources.files(_CRAWLER_USER_AGENTS_PACKAGE).joinpath(_CRAWLER_USER_AGENTS_FILE)
    entries = json.loads(data_file.read_text(encoding="utf-8"))
    return tuple(UserAgentPattern(entry["pattern"], _BOT) for entry in entries)


def load_user_agent_matcher() -> UserAgentMatcher:
    """Build the matcher from crawler-user-agents and ADDITIONAL_USER_AGENT_PATTERNS.

    Raises `importlib.metadata.PackageNotFoundError` when crawler-user-agents is
    not installed, and `re.error` when a pattern does not compile.
    """
    package_version = importlib.metadata.version(CRAWLER_USER_AGENTS_DISTRIBUTION)
    patterns = load_crawler_user_agent_patterns() + ADDITIONAL_USER_AGENT_PATTERNS
    version = f"{CRAWLER_USER_AGENTS_DISTRIBUTION}-{package_version}+topmail-{ADDITIONS_VERSION}"
    return UserAgentMatcher(patterns, version=version)
