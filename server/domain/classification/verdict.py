"""The classifier's verdict on one e-mail event."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BotType(enum.Enum):
    """Kind of automated client behind an event."""

    SECURITY_SCANNER = "security_scanner"
    APPLE_MPP = "apple_mpp"
    DATACENTER = "datacenter"
    TIMING = "timing"
    HONEYPOT = "honeypot"
    USER_AGENT = "user_agent"
    BEHAVIOR = "behavior"
    # Prefetch and preview requests, including HEAD requests.
    PREFETCH = "prefetch"


class Confidence(enum.IntEnum):
    """Certainty of a bot signal. Larger values are more certain."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an event came from a bot, why, and which earlier clicks become bots with it.

    `is_bot` is true exactly when `signals` is not empty, and then `bot_type` and
    `confidence` are set. Apple Mail Privacy Protection opens are bots of type
    APPLE_MPP, so reports can count them apart from human opens and other bots.
    """

    is_bot: bool
    bot_type: BotType | None
    confidence: Confidence | None
    # Every bot signal that fired, such as "click_burst" or "datacenter_network:aws",
    # strongest first by the rules' precedence.
    signals: tuple[str, ...]
    classifier_version: str
    # Earlier clicks, stored as human, that a click burst turns into bots.
    reclassify_click_ids: tuple[str, ...] = ()
