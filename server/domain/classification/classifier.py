"""The bot classifier: a pure function from event facts to a verdict."""

from __future__ import annotations

import functools
from datetime import timedelta

from server.domain.classification.bursts import find_burst_clicks
from server.domain.classification.facts import EmailEventFacts, EmailEventType
from server.domain.classification.networks import (
    NetworkCategory,
    NetworkDirectory,
    NetworkMatch,
)
from server.domain.classification.rules import (
    ClassificationRules,
    MailImageProxy,
    SignalKind,
)
from server.domain.classification.user_agents import UserAgentMatcher
from server.domain.classification.verdict import Verdict

_Signal = tuple[SignalKind, str]


class BotClassifier:
    """Classifies e-mail events with network data and user-agent patterns loaded at startup.

    `classify` reads nothing but its argument and the immutable state built here:
    no clock, database, network or file.
    """

    def __init__(
        self,
        networks: NetworkDirectory,
        user_agents: UserAgentMatcher,
        rules: ClassificationRules | None = None,
    ) -> None:
        self.networks = networks
        self.user_agents = user_agents
        self.rules = rules if rules is not None else ClassificationRules()
        self.version = f"rules-{self.rules.version}/{user_agents.version}"
        precedence = {bot_type: rank for rank, bot_type in enumerate(self.rules.bot_type_precedence)}
        # Sort key of each signal kind: stronger bot type first, then higher confidence.
        self._signal_order = {
            kind: (precedence[rating.bot_type], -rating.confidence, kind.value)
            for kind, rating in self.rules.signal_ratings.items()
        }
        self._human = Verdict(
            is_bot=False,
            bot_type=None,
            confidence=None,
            signals=(),
            classifier_version=self.version,
        )

    def classify(self, event: EmailEventFacts) -> Verdict:
        """Return the verdict on one event. DELIVERED events are never bots."""
        if event.event_type is EmailEventType.DELIVERED:
            return self._human

        matches = self.networks.lookup(event.client_ip) if event.client_ip is not None else ()
        signals: list[_Signal] = []
        self._add_request_signals(event, signals)

        if event.event_type is EmailEventType.OPENED:
            proxy = self._allowed_mail_image_proxy(event.user_agent, matches)
            self._add_network_signals(matches, signals, is_open=True, proxy=proxy)
            self._add_user_agent_signals(event.user_agent, signals, proxy=proxy)
            self._add_apple_mpp_signals(event.user_agent, matches, signals)
            return self._verdict(signals, reclassify_click_ids=())

        if event.is_honeypot_link:
            signals.append((SignalKind.HONEYPOT_LINK, ""))
        self._add_network_signals(matches, signals, is_open=False, proxy=None)
        self._add_user_agent_signals(event.user_agent, signals, proxy=None)
        self._add_click_timing_signals(event, signals)
        reclassify_click_ids = self._add_click_burst_signal(event, signals)
        return self._verdict(signals, reclassify_click_ids)

    def _add_request_signals(self, event: EmailEventFacts, signals: list[_Signal]) -> None:
        if event.http_method.strip().upper() == "HEAD":
            signals.append((SignalKind.HEAD_REQUEST, ""))
        if event.has_prefetch_header:
            signals.append((SignalKind.PREFETCH_HEADER, ""))

    def _allowed_mail_image_proxy(self, user_agent: str, matches: tuple[NetworkMatch, ...]) -> MailImageProxy | None:
        """Return the image proxy named in an open's user agent, unless the network data denies it.

        The network data denies it when the address lies in listed networks, none
        of them the proxy provider's.
        """
        for proxy in self.rules.mail_image_proxies:
            if proxy.user_agent_token not in user_agent:
                continue
            if not matches or any(match.provider == proxy.provider for match in matches):
                return proxy
        return None

    def _add_network_signals(
        self,
        matches: tuple[NetworkMatch, ...],
        signals: list[_Signal],
        *,
        is_open: bool,
        proxy: MailImageProxy | None,
    ) -> None:
        for match in matches:
            if match.category is NetworkCategory.SECURITY_SCANNER:
                signals.append((SignalKind.SECURITY_SCANNER_NETWORK, match.provider))
            elif match.category is NetworkCategory.DATACENTER and proxy is None:
                signals.append((SignalKind.DATACENTER_NETWORK, match.provider))
            elif match.category is NetworkCategory.MAIL_IMAGE_PROXY and not is_open:
                # Image proxies fetch images for readers but never follow links.
                signals.append((SignalKind.MAIL_IMAGE_PROXY_NETWORK, match.provider))
            # APPLE_PRIVACY_PROXY networks also carry iCloud Private Relay users,
            # so they count only together with the Apple MPP user agent.

    def _add_user_agent_signals(self, user_agent: str, signals: list[_Signal], *, proxy: MailImageProxy | None) -> None:
        if not user_agent.strip():
            signals.append((SignalKind.EMPTY_USER_AGENT, ""))
            return

        if proxy is not None:
            # The proxy's own token is no bot signal, but the rest of the user agent still is.
            user_agent = user_agent.replace(proxy.user_agent_token, " ")
        match = self.user_agents.match(user_agent)
        if match.is_bot:
            signals.append((SignalKind.BOT_USER_AGENT, ""))
        for provider in match.security_scanners:
            signals.append((SignalKind.SECURITY_SCANNER_USER_AGENT, provider))

    def _add_apple_mpp_signals(
        self, user_agent: str, matches: tuple[NetworkMatch, ...], signals: list[_Signal]
    ) -> None:
        if user_agent != self.rules.apple_mpp_user_agent:
            return
        signals.append((SignalKind.APPLE_MPP_USER_AGENT, ""))
        if any(match.category is NetworkCategory.APPLE_PRIVACY_PROXY for match in matches):
            signals.append((SignalKind.APPLE_MPP_PROXY, ""))

    def _add_click_timing_signals(self, event: EmailEventFacts, signals: list[_Signal]) -> None:
        if event.delivered_at is None:
            return
        since_delivery = event.occurred_at - event.delivered_at
        if since_delivery < timedelta(0):
            signals.append((SignalKind.CLICK_BEFORE_DELIVERY, ""))
        elif since_delivery <= self.rules.soon_after_delivery:
            signals.append((SignalKind.CLICK_SOON_AFTER_DELIVERY, ""))

    def _add_click_burst_signal(self, event: EmailEventFacts, signals: list[_Signal]) -> tuple[str, ...]:
        """Add the burst signal and return the ids of burst clicks stored as human."""
        burst_clicks = find_burst_clicks(event.occurred_at, event.earlier_clicks, self.rules.click_bursts)
        if burst_clicks is None:
            return ()
        signals.append((SignalKind.CLICK_BURST, ""))
        human_ids = (click.click_id for click in burst_clicks if click.is_human)
        return tuple(dict.fromkeys(human_ids))

    def _verdict(self, signals: list[_Signal], reclassify_click_ids: tuple[str, ...]) -> Verdict:
        if not signals:
            return self._human

        ratings = self.rules.signal_ratings
        ranked = sorted(set(signals), key=lambda signal: (self._signal_order[signal[0]], signal[1]))
        strongest = ratings[ranked[0][0]]
        return Verdict(
            is_bot=True,
            bot_type=strongest.bot_type,
            confidence=max(ratings[kind].confidence for kind, _ in ranked),
            signals=tuple(_signal_name(kind, provider) for kind, provider in ranked),
            classifier_version=self.version,
            reclassify_click_ids=reclassify_click_ids,
        )


@functools.lru_cache(maxsize=1024)
def _signal_name(kind: SignalKind, provider: str) -> str:
    """Return "kind" or "kind:provider", with the provider in snake_case."""
    if not provider:
        return kind.value
    normalized = "".join(character if character.isalnum() else "_" for character in provider.strip().lower())
    return f"{kind.value}:{normalized}"
