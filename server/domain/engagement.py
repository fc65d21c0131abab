"""Listing e-mail events and engagement figures: queries, page tokens and rates."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from server.domain.classification import BotType, EmailEventType
from server.domain.email_events import TimestampInput, check_timestamp
from server.domain.validation import Violations, check_text, check_uuid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Tokens this service makes are about 150 characters long.
MAX_PAGE_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class EmailEventFilter:
    """Filters of a listing; None matches everything."""

    message_id: str | None = None
    campaign_id: str | None = None
    contact_id: uuid.UUID | None = None
    event_type: EmailEventType | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    is_bot: bool | None = None

    def digest(self) -> str:
        """Return a short hash of the filters, so a page token cannot be reused with other filters."""
        content = json.dumps(
            [
                self.message_id,
                self.campaign_id,
                str(self.contact_id) if self.contact_id else None,
                self.event_type.value if self.event_type else None,
                self.start_time.isoformat() if self.start_time else None,
                self.end_time.isoformat() if self.end_time else None,
                self.is_bot,
            ]
        )
        return hashlib.sha256(content.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PagePosition:
    """The last event of a page: listing goes on with events older than it."""

    occurred_at: datetime
    event_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class EmailEventQuery:
    """One page of a listing, newest first."""

    workspace_id: uuid.UUID
    filter: EmailEventFilter
    after: PagePosition | None
    limit: int


@dataclass(frozen=True, slots=True)
class EmailEventListInput:
    """A listing request as the caller sent it."""

    message_id: str = ""
    campaign_id: str = ""
    contact_id: str = ""
    event_type: EmailEventType | None = None
    start_time: TimestampInput | None = None
    end_time: TimestampInput | None = None
    is_bot: bool | None = None
    page_size: int = 0
    page_token: str = ""


def validate_listing(
    request: EmailEventListInput, *, now: datetime
) -> tuple[EmailEventFilter, int, PagePosition | None]:
    """Return the filter, page size and position of a listing; raise ValidationFailed listing all violations."""
    violations = Violations()
    message_id = check_text(violations, "message_id", request.message_id, max_length=200)
    campaign_id = check_text(violations, "campaign_id", request.campaign_id, max_length=200)
    contact_id = check_uuid(violations, "contact_id", request.contact_id) if request.contact_id else None
    start_time = check_timestamp(violations, "start_time", request.start_time, now=now) if request.start_time else None
    end_time = check_timestamp(violations, "end_time", request.end_time, now=now) if request.end_time else None
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        violations.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {request.page_size}")
    listing_filter = EmailEventFilter(
        message_id=message_id,
        campaign_id=campaign_id,
        contact_id=contact_id,
        event_type=request.event_type,
        start_time=start_time,
        end_time=end_time,
        is_bot=request.is_bot,
    )
    position = None
    if request.page_token:
        position = decode_page_token(request.page_token, listing_filter.digest())
        if position is None:
            violations.add("page_token", "is not a token returned by this listing with the same filters")
    violations.raise_if_any()
    return listing_filter, request.page_size or DEFAULT_PAGE_SIZE, position


def encode_page_token(position: PagePosition, filter_digest: str) -> str:
    content = json.dumps([position.occurred_at.isoformat(), str(position.event_id), filter_digest])
    return base64.urlsafe_b64encode(content.encode()).decode().rstrip("=")


def decode_page_token(token: str, filter_digest: str) -> PagePosition | None:
    """Return the position in a token, or None when it is malformed or was made for other filters."""
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        content = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        return None
    if not isinstance(content, list) or len(content) != 3 or not all(isinstance(part, str) for part in content):
        return None
    occurred_at, event_id, digest = content
    try:
        position = PagePosition(datetime.fromisoformat(occurred_at).astimezone(UTC), uuid.UUID(event_id))
    except (ValueError, OverflowError):
        return None
    if digest != filter_digest or position.occurred_at.tzinfo is None:
        return None
    return position


@dataclass(frozen=True, slots=True)
class EngagementScope:
    """One message or one campaign."""

    message_id: str | None
    campaign_id: str | None


def validate_scope(message_id: str, campaign_id: str) -> EngagementScope:
    violations = Violations()
    if bool(message_id) == bool(campaign_id):
        violations.add("message_id", "exactly one of message_id and campaign_id is required")
        violations.add("campaign_id", "exactly one of message_id and campaign_id is required")
    checked_message = check_text(violations, "message_id", message_id, max_length=200)
    checked_campaign = check_text(violations, "campaign_id", campaign_id, max_length=200)
    violations.raise_if_any()
    return EngagementScope(message_id=checked_message, campaign_id=checked_campaign)


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Event and distinct-message counts of one event type in one group of events."""

    events: int = 0
    messages: int = 0


@dataclass(frozen=True, slots=True)
class EngagementCounts:
    """Counts computed by the database for one scope.

    `human` and `everyone` map each event type to its counts. `by_bot_type` maps a bot
    type to its OPENED and CLICKED event counts.
    """

    human: dict[EmailEventType, EventCounts]
    everyone: dict[EmailEventType, EventCounts]
    apple_mpp_opens: EventCounts
    by_bot_type: dict[BotType, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class EngagementFigures:
    """Figures of one group of events, with rates as fractions between 0 and 1."""

    delivered: int
    opens: int
    unique_opens: int
    clicks: int
    unique_clicks: int
    open_rate: float
    click_rate: float
    click_to_open_rate: float


def engagement_figures(counts: dict[EmailEventType, EventCounts]) -> EngagementFigures:
    delivered = counts.get(EmailEventType.DELIVERED, EventCounts()).messages
    opens = counts.get(EmailEventType.OPENED, EventCounts())
    clicks = counts.get(EmailEventType.CLICKED, EventCounts())
    return EngagementFigures(
        delivered=delivered,
        opens=opens.events,
        unique_opens=opens.messages,
        clicks=clicks.events,
        unique_clicks=clicks.messages,
        open_rate=_ratio(opens.messages, delivered),
        click_rate=_ratio(clicks.messages, delivered),
        click_to_open_rate=_ratio(clicks.messages, opens.messages),
    )


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
