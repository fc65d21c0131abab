"""Thresholds, signal ratings and precedence of the bot classifier, kept as data."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from server.domain.classification.verdict import BotType, Confidence


class SignalKind(enum.Enum):
    """A bot signal. The value is the stable signal name, before any ":provider" suffix."""

    HONEYPOT_LINK = "honeypot_link"
    CLICK_BURST = "click_burst"
    SECURITY_SCANNER_NETWORK = "security_scanner_network"
    SECURITY_SCANNER_USER_AGENT = "security_scanner_user_agent"
    HEAD_REQUEST = "head_request"
    PREFETCH_HEADER = "prefetch_header"
    BOT_USER_AGENT = "bot_user_agent"
    EMPTY_USER_AGENT = "empty_user_agent"
    APPLE_MPP_PROXY = "apple_mpp_proxy"
    APPLE_MPP_USER_AGENT = "apple_mpp_user_agent"
    DATACENTER_NETWORK = "datacenter_network"
    MAIL_IMAGE_PROXY_NETWORK = "mail_image_proxy_network"
    CLICK_SOON_AFTER_DELIVERY = "click_soon_after_delivery"
    CLICK_BEFORE_DELIVERY = "click_before_delivery"


@dataclass(frozen=True, slots=True)
class SignalRating:
    """The bot type and confidence that one signal stands for."""

    bot_type: BotType
    confidence: Confidence


@dataclass(frozen=True, slots=True)
class BurstRule:
    """`min_clicks` or more clicks whose times span at most `window`, ends included."""

    min_clicks: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class MailImageProxy:
    """A webmail image proxy that fetches the open pixel for a person reading the message."""

    # Network provider name, as in the NetworkDirectory, that runs the proxy.
    provider: str
    # Case-sensitive substring of the proxy's user agent.
    user_agent_token: str


_HIGH = Confidence.HIGH
_MEDIUM = Confidence.MEDIUM
_LOW = Confidence.LOW

DEFAULT_SIGNAL_RATINGS: Mapping[SignalKind, SignalRating] = MappingProxyType(
    {
        SignalKind.HONEYPOT_LINK: SignalRating(BotType.HONEYPOT, _HIGH),
        SignalKind.CLICK_BURST: SignalRating(BotType.BEHAVIOR, _HIGH),
        SignalKind.SECURITY_SCANNER_NETWORK: SignalRating(BotType.SECURITY_SCANNER, _HIGH),
        SignalKind.SECURITY_SCANNER_USER_AGENT: SignalRating(BotType.SECURITY_SCANNER, _HIGH),
        SignalKind.HEAD_REQUEST: SignalRating(BotType.PREFETCH, _HIGH),
        SignalKind.PREFETCH_HEADER: SignalRating(BotType.PREFETCH, _HIGH),
        SignalKind.BOT_USER_AGENT: SignalRating(BotType.USER_AGENT, _HIGH),
        SignalKind.EMPTY_USER_AGENT: SignalRating(BotType.USER_AGENT, _MEDIUM),
        SignalKind.APPLE_MPP_PROXY: SignalRating(BotType.APPLE_MPP, _HIGH),
        SignalKind.APPLE_MPP_USER_AGENT: SignalRating(BotType.APPLE_MPP, _MEDIUM),
        SignalKind.DATACENTER_NETWORK: SignalRating(BotType.DATACENTER, _MEDIUM),
        SignalKind.MAIL_IMAGE_PROXY_NETWORK: SignalRating(BotType.DATACENTER, _MEDIUM),
        SignalKind.CLICK_SOON_AFTER_DELIVERY: SignalRating(BotType.TIMING, _LOW),
        SignalKind.CLICK_BEFORE_DELIVERY: SignalRating(BotType.TIMING, _LOW),
    }
)

DEFAULT_BOT_TYPE_PRECEDENCE: tuple[BotType, ...] = (
    BotType.HONEYPOT,
    BotType.SECURITY_SCANNER,
    BotType.BEHAVIOR,
    BotType.PREFETCH,
    BotType.USER_AGENT,
    BotType.APPLE_MPP,
    BotType.DATACENTER,
    BotType.TIMING,
)

DEFAULT_MAIL_IMAGE_PROXIES: tuple[MailImageProxy, ...] = (
    MailImageProxy("google", "GoogleImageProxy"),
    MailImageProxy("yahoo", "YahooMailProxy"),
    # NOTE: "OutlookImageProxy" is the token other tracking projects match for
    # Outlook.com; no Microsoft document confirming it was found.
    MailImageProxy("microsoft", "OutlookImageProxy"),
)


@dataclass(frozen=True)
class ClassificationRules:
    """Every threshold and table the classifier applies, with the defaults in production.

    Click bursts: the clicks of one contact on one message form a burst when
    `min_clicks` of them, the new click included, span at most `window`. Both
    ends count, so with the defaults 3 clicks spanning 2.0 s are a burst and 3
    clicks spanning 2.001 s are not. Likewise 5 clicks spanning 30.0 s are a
    burst and 4 clicks are not. Every click of a burst is a bot, whatever the link.

    Timing: a click at most `soon_after_delivery` after delivery (10.0 s by
    default, inclusive) is a bot, and so is a click before delivery.

    Apple Mail Privacy Protection: an open whose user agent is exactly
    `apple_mpp_user_agent` is a bot of type APPLE_MPP. It has HIGH confidence
    from an APPLE_PRIVACY_PROXY network and MEDIUM confidence otherwise.

    Mail image proxies: an open whose user agent contains a proxy's token gets an
    allowance unless its address lies only in networks of other providers. With
    the allowance, the token fires no user-agent signal and DATACENTER networks
    fire none, so the open is human unless a scanner network, a HEAD request, a
    prefetch header or another bot pattern in the user agent fires. Clicks never
    get the allowance.

    Precedence: when signals of several bot types fire, the verdict's type is
    the first of `bot_type_precedence` among them. The default order, strongest
    first, is:
    - HONEYPOT: the link is hidden from readers;
    - SECURITY_SCANNER: a published scanner network or user agent;
    - BEHAVIOR: a click burst;
    - PREFETCH: a HEAD request or a prefetch header;
    - USER_AGENT: a declared bot or no user agent;
    - APPLE_MPP;
    - DATACENTER: hosting networks, where few people browse;
    - TIMING.
    The verdict's confidence is the highest confidence among all signals that fired.
    """

    # Recorded in every verdict. Change it whenever a rule or default changes.
    version: str = "1"
    click_bursts: tuple[BurstRule, ...] = (
        BurstRule(min_clicks=3, window=timedelta(seconds=2)),
        BurstRule(min_clicks=5, window=timedelta(seconds=30)),
    )
    soon_after_delivery: timedelta = timedelta(seconds=10)
    apple_mpp_user_agent: str = "Mozilla/5.0"
    mail_image_proxies: tuple[MailImageProxy, ...] = DEFAULT_MAIL_IMAGE_PROXIES
    signal_ratings: Mapping[SignalKind, SignalRating] = field(default_factory=lambda: DEFAULT_SIGNAL_RATINGS)
    bot_type_precedence: tuple[BotType, ...] = DEFAULT_BOT_TYPE_PRECEDENCE

    def __post_init__(self) -> None:
        for rule in self.click_bursts:
            if rule.min_clicks < 2:
                raise ValueError(f"BurstRule.min_clicks is {rule.min_clicks}, but a burst needs at least 2 clicks")
            if rule.window < timedelta(0):
                raise ValueError(f"BurstRule.window is negative ({rule.window}); expected 0 seconds or more")
        if self.soon_after_delivery < timedelta(0):
            raise ValueError(
                f"soon_after_delivery is negative ({self.soon_after_delivery}); expected 0 seconds or more"
            )

        missing_ratings = [kind.value for kind in SignalKind if kind not in self.signal_ratings]
        if missing_ratings:
            raise ValueError(f"signal_ratings lacks a rating for: {', '.join(missing_ratings)}")

        if sorted(self.bot_type_precedence, key=lambda bot_type: bot_type.value) != sorted(
            BotType, key=lambda bot_type: bot_type.value
        ):
            raise ValueError(
                "bot_type_precedence must list every BotType exactly once; got "
                f"{[bot_type.value for bot_type in self.bot_type_precedence]}"
            )
