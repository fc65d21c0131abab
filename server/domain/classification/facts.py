"""Facts about one e-mail event that the bot classifier reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from server.domain.classification.networks import IPAddress


class EmailEventType(enum.Enum):
    """Kind of e-mail event."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"


@dataclass(frozen=True, slots=True)
class EarlierClick:
    """A stored click of the same contact on the same message."""

    click_id: str
    occurred_at: datetime
    # Whether the click is currently stored as a human click.
    is_human: bool

    def __post_init__(self) -> None:
        _require_aware("EarlierClick.occurred_at", self.occurred_at)


@dataclass(frozen=True, slots=True)
class EmailEventFacts:
    """One delivery, open or click, with the context the rules need.

    Times are timezone-aware, and the service passes UTC. The classifier reads the
    honeypot flag, delivery time and earlier clicks only for clicks.
    """

    event_type: EmailEventType
    occurred_at: datetime
    client_ip: IPAddress | None
    user_agent: str
    # Request method in any case, such as "GET" or "HEAD", or empty when unknown.
    http_method: str = ""
    # Whether the request carried a prefetch or preview header, as `has_prefetch_header` decides.
    has_prefetch_header: bool = False
    # Id and URL of the clicked link, which the current rules do not read.
    link_id: str | None = None
    link_url: str | None = None
    # Whether the click is on the message's hidden honeypot link.
    is_honeypot_link: bool = False
    # When the message was delivered to the contact's mail server, if known.
    delivered_at: datetime | None = None
    # Other clicks of the same contact on the same message, stored before this one.
    # Their times may lie before or after `occurred_at` when events arrive out of order.
    earlier_clicks: tuple[EarlierClick, ...] = ()

    def __post_init__(self) -> None:
        _require_aware("EmailEventFacts.occurred_at", self.occurred_at)
        if self.delivered_at is not None:
            _require_aware("EmailEventFacts.delivered_at", self.delivered_at)


def _require_aware(field_name: str, value: datetime) -> None:
    if value.utcoffset() is None:
        raise ValueError(f"{field_name} is a naive datetime ({value.isoformat()}). Pass a timezone-aware UTC datetime.")
