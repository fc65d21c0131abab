"""Network data, user agents and event builders shared by the classifier tests.

Every prefix is a real published one: Microsoft Exchange Online Protection from
the SPF record of spf.protection.outlook.com, AWS from ip-ranges.json
(ap-northeast-2), Apple from the iCloud Private Relay egress-ip-ranges.csv, and
Google's crawler and image-proxy range 66.249.64.0/19.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from server.domain.classification import (
    EarlierClick,
    EmailEventFacts,
    EmailEventType,
    NetworkCategory,
    NetworkDirectory,
    NetworkPrefix,
)
from server.domain.classification.networks import IPAddress

DELIVERED_AT = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)

MICROSOFT_EOP_IPV4 = "40.107.0.0/16"
MICROSOFT_EOP_IPV6 = "2a01:111:f400::/48"
AWS_EC2 = "3.5.140.0/22"
APPLE_RELAY_IPV4 = "172.224.226.0/27"
APPLE_RELAY_IPV6 = "2a02:26f7:b000:4000::/64"
GOOGLE_PROXY = "66.249.64.0/19"

AWS_EC2_ADDRESS = "3.5.140.10"

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4.1 Mobile/15E148 Safari/604.1"
)
GMAIL_IMAGE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_MAIL_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"


def _prefix(network: str, category: NetworkCategory, provider: str) -> NetworkPrefix:
    return NetworkPrefix(ipaddress.ip_network(network), category, provider)


def build_directory(*, google_as_datacenter: bool = False) -> NetworkDirectory:
    """Build the test directory, optionally listing Google's proxy range as a datacenter too."""
    prefixes = [
        _prefix(MICROSOFT_EOP_IPV4, NetworkCategory.SECURITY_SCANNER, "microsoft"),
        _prefix(MICROSOFT_EOP_IPV6, NetworkCategory.SECURITY_SCANNER, "microsoft"),
        _prefix(AWS_EC2, NetworkCategory.DATACENTER, "aws"),
        _prefix(APPLE_RELAY_IPV4, NetworkCategory.APPLE_PRIVACY_PROXY, "apple"),
        _prefix(APPLE_RELAY_IPV6, NetworkCategory.APPLE_PRIVACY_PROXY, "apple"),
        _prefix(GOOGLE_PROXY, NetworkCategory.MAIL_IMAGE_PROXY, "google"),
    ]
    if google_as_datacenter:
        prefixes.append(_prefix(GOOGLE_PROXY, NetworkCategory.DATACENTER, "google"))
    return NetworkDirectory(prefixes)


def address(text: str | None) -> IPAddress | None:
    return None if text is None else ipaddress.ip_address(text)


def open_event(
    user_agent: str,
    ip: str | None,
    after: timedelta,
    *,
    http_method: str = "GET",
    has_prefetch_header: bool = False,
) -> EmailEventFacts:
    """Build an open `after` the delivery."""
    return EmailEventFacts(
        event_type=EmailEventType.OPENED,
        occurred_at=DELIVERED_AT + after,
        client_ip=address(ip),
        user_agent=user_agent,
        http_method=http_method,
        has_prefetch_header=has_prefetch_header,
        delivered_at=DELIVERED_AT,
    )


def click_event(
    user_agent: str,
    ip: str | None,
    after: timedelta,
    *,
    http_method: str = "GET",
    has_prefetch_header: bool = False,
    is_honeypot_link: bool = False,
    delivered_at: datetime | None = DELIVERED_AT,
    earlier_clicks: tuple[EarlierClick, ...] = (),
) -> EmailEventFacts:
    """Build a click `after` the delivery."""
    return EmailEventFacts(
        event_type=EmailEventType.CLICKED,
        occurred_at=DELIVERED_AT + after,
        client_ip=address(ip),
        user_agent=user_agent,
        http_method=http_method,
        has_prefetch_header=has_prefetch_header,
        link_id="link-1",
        link_url="https://shop.example/spring-sale",
        is_honeypot_link=is_honeypot_link,
        delivered_at=delivered_at,
        earlier_clicks=earlier_clicks,
    )
