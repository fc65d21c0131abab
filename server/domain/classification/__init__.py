"""Bot classification of e-mail events: pure functions over facts and loaded network data."""

from server.domain.classification.classifier import BotClassifier
from server.domain.classification.crawler_patterns import load_user_agent_matcher
from server.domain.classification.facts import EarlierClick, EmailEventFacts, EmailEventType
from server.domain.classification.networks import (
    NetworkCategory,
    NetworkDirectory,
    NetworkMatch,
    NetworkPrefix,
    NetworkSource,
)
from server.domain.classification.prefetch import PREFETCH_MARKERS, has_prefetch_header
from server.domain.classification.rules import ClassificationRules, SignalKind
from server.domain.classification.user_agents import (
    UserAgentCategory,
    UserAgentMatch,
    UserAgentMatcher,
    UserAgentPattern,
)
from server.domain.classification.verdict import BotType, Confidence, Verdict

__all__ = [
    "PREFETCH_MARKERS",
    "BotClassifier",
    "BotType",
    "ClassificationRules",
    "Confidence",
    "EarlierClick",
    "EmailEventFacts",
    "EmailEventType",
    "NetworkCategory",
    "NetworkDirectory",
    "NetworkMatch",
    "NetworkPrefix",
    "NetworkSource",
    "SignalKind",
    "UserAgentCategory",
    "UserAgentMatch",
    "UserAgentMatcher",
    "UserAgentPattern",
    "Verdict",
    "has_prefetch_header",
    "load_user_agent_matcher",
]
