"""Listing e-mail events and engagement figures: queries, page tokens, rates and the counters behind them."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from server.domain.classification import BotType, EmailEventType
from server.domain.email_events import EmailEvent, TimestampInput, check_timestamp
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
    """Counts of one scope, built from its engagement counters.

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


class ScopeKind(enum.StrEnum):
    """Kind of scope that the scope_id of an engagement counter identifies."""

    MESSAGE = "message"
    CAMPAIGN = "campaign"


class EngagementCounterKey(NamedTuple):
    """One stored engagement counter. Keys sort by workspace, scope and metric name."""

    workspace_id: uuid.UUID
    scope_kind: ScopeKind
    scope_id: str
    metric: str


@dataclass(frozen=True, slots=True)
class CountedEvent:
    """The fields of a stored e-mail event that engagement counters depend on."""

    workspace_id: uuid.UUID
    contact_id: uuid.UUID
    message_id: str
    campaign_id: str | None
    event_type: EmailEventType
    is_bot: bool
    bot_type: BotType | None

    @classmethod
    def of(cls, event: EmailEvent) -> CountedEvent:
        return cls(
            workspace_id=event.workspace_id,
            contact_id=event.contact_id,
            message_id=event.message_id,
            campaign_id=event.campaign_id,
            event_type=event.event_type,
            is_bot=event.verdict.is_bot,
            bot_type=event.verdict.bot_type,
        )


# Metric names. For each event type ("delivered", "opened", "clicked"):
#   "<type>.events"          events of that type
#   "<type>.messages"        (contact, message) pairs with at least one such event
#   "<type>.human_events"    the same over events whose verdict is human
#   "<type>.human_messages"
# and further:
#   "apple_mpp_opens.events", "apple_mpp_opens.messages"
#                            OPENED events whose bot type is APPLE_MPP, whatever the value of `is_bot`
#   "bot.<bot type>.<type>"  events of that type with `is_bot` set and that bot type
APPLE_MPP_OPEN_EVENTS = "apple_mpp_opens.events"
APPLE_MPP_OPEN_MESSAGES = "apple_mpp_opens.messages"


Measure = Literal["events", "messages", "human_events", "human_messages"]


def event_metric(event_type: EmailEventType, measure: Measure) -> str:
    return f"{event_type.value}.{measure}"


def bot_metric(bot_type: BotType, event_type: EmailEventType) -> str:
    return f"bot.{bot_type.value}.{event_type.value}"


def engagement_metric_names() -> tuple[str, ...]:
    """Return every metric name, in a fixed order: each is one column of the counter table."""
    measures: tuple[Measure, ...] = ("events", "messages", "human_events", "human_messages")
    return (
        *(event_metric(event_type, measure) for event_type in EmailEventType for measure in measures),
        APPLE_MPP_OPEN_EVENTS,
        APPLE_MPP_OPEN_MESSAGES,
        *(bot_metric(bot_type, event_type) for bot_type in BotType for event_type in EmailEventType),
    )


def engagement_counter_scope(scope: EngagementScope) -> tuple[ScopeKind, str]:
    """Return the counter scope kind and id of a validated scope, which sets exactly one of its two ids."""
    if scope.message_id is not None:
        return ScopeKind.MESSAGE, scope.message_id
    if scope.campaign_id is not None:
        return ScopeKind.CAMPAIGN, scope.campaign_id
    raise ValueError("an engagement scope needs a message_id or a campaign_id")


def engagement_counter_deltas(
    before: Sequence[EmailEvent], after: Sequence[EmailEvent]
) -> dict[EngagementCounterKey, int]:
    """Return the non-zero counter changes when the events of one (contact, message) pair change.

    `before` and `after` are every event of the pair before and after the change, so
    `before` is empty for a new pair. The pair counts in full in its message's scope and
    in the scope of every campaign id that any of its events carries. A pair that gains
    its first event of a campaign therefore adds all of its events to that campaign.
    Raises ValueError when the events belong to more than one pair.
    """
    return counted_event_deltas(
        [CountedEvent.of(event) for event in before], [CountedEvent.of(event) for event in after]
    )


def counted_event_deltas(
    before: Sequence[CountedEvent], after: Sequence[CountedEvent]
) -> dict[EngagementCounterKey, int]:
    """Compute engagement_counter_deltas from only the fields of the events that counters depend on."""
    pairs = {(event.workspace_id, event.message_id, event.contact_id) for event in (*before, *after)}
    if len(pairs) > 1:
        raise ValueError(f"engagement counter deltas need the events of one pair, got {len(pairs)} pairs")
    if not pairs:
        return {}
    workspace_id, message_id, _ = next(iter(pairs))
    return tally_counter_deltas(workspace_id, message_id, tally_events(before), tally_events(after))


@dataclass(frozen=True, slots=True)
class TallyKey:
    """The fields of an event that engagement counters depend on, as a key of a count of events."""

    event_type: EmailEventType
    is_bot: bool
    bot_type: BotType | None
    campaign_id: str | None


def tally_key(event: CountedEvent | EmailEvent) -> TallyKey:
    if isinstance(event, EmailEvent):
        return TallyKey(event.event_type, event.verdict.is_bot, event.verdict.bot_type, event.campaign_id)
    return TallyKey(event.event_type, event.is_bot, event.bot_type, event.campaign_id)


def tally_events(events: Sequence[CountedEvent | EmailEvent]) -> Counter[TallyKey]:
    """Count a pair's events by the fields that engagement counters depend on."""
    return Counter(tally_key(event) for event in events)


def tally_counter_deltas(
    workspace_id: uuid.UUID, message_id: str, before: Mapping[TallyKey, int], after: Mapping[TallyKey, int]
) -> dict[EngagementCounterKey, int]:
    """Return the non-zero counter changes of one (contact, message) pair, from its event counts.

    `before` and `after` count every event of the pair before and after the change. The
    counts are all that counters depend on, so a pair with a long history needs no list of
    its events.
    """
    deltas: Counter[EngagementCounterKey] = Counter()
    for tally, sign in ((before, -1), (after, 1)):
        contribution = _tally_metrics(tally)
        for kind, scope_id in _tally_scopes(message_id, tally):
            for metric, value in contribution.items():
                deltas[EngagementCounterKey(workspace_id, kind, scope_id, metric)] += sign * value
    return {key: delta for key, delta in deltas.items() if delta != 0}


def _tally_scopes(message_id: str, tally: Mapping[TallyKey, int]) -> list[tuple[ScopeKind, str]]:
    present = [key for key, count in tally.items() if count > 0]
    if not present:
        return []
    campaign_ids = sorted({key.campaign_id for key in present if key.campaign_id is not None})
    return [(ScopeKind.MESSAGE, message_id)] + [(ScopeKind.CAMPAIGN, campaign) for campaign in campaign_ids]


def _tally_metrics(tally: Mapping[TallyKey, int]) -> Counter[str]:
    """Count the metrics of one pair's events; every `.messages` metric is 0 or 1 here."""
    metrics: Counter[str] = Counter()
    for key, count in tally.items():
        if count <= 0:
            continue
        metrics[event_metric(key.event_type, "events")] += count
        metrics[event_metric(key.event_type, "messages")] = 1
        if not key.is_bot:
            metrics[event_metric(key.event_type, "human_events")] += count
            metrics[event_metric(key.event_type, "human_messages")] = 1
        if key.event_type is EmailEventType.OPENED and key.bot_type is BotType.APPLE_MPP:
            metrics[APPLE_MPP_OPEN_EVENTS] += count
            metrics[APPLE_MPP_OPEN_MESSAGES] = 1
        if key.is_bot and key.bot_type is not None:
            metrics[bot_metric(key.bot_type, key.event_type)] += count
    return metrics


def engagement_counts_from_counters(counters: Mapping[str, int]) -> EngagementCounts:
    """Build the counts of one scope from its counters, keyed by metric name; missing counters are 0.

    An event type or bot type whose event counters are all 0 is left out, as it is when no
    event of it exists.
    """
    everyone: dict[EmailEventType, EventCounts] = {}
    human: dict[EmailEventType, EventCounts] = {}
    for event_type in EmailEventType:
        events = counters.get(event_metric(event_type, "events"), 0)
        if events:
            everyone[event_type] = EventCounts(events, counters.get(event_metric(event_type, "messages"), 0))
        human_events = counters.get(event_metric(event_type, "human_events"), 0)
        if human_events:
            human[event_type] = EventCounts(human_events, counters.get(event_metric(event_type, "human_messages"), 0))

    apple_mpp_opens = EventCounts(counters.get(APPLE_MPP_OPEN_EVENTS, 0), counters.get(APPLE_MPP_OPEN_MESSAGES, 0))

    by_bot_type: dict[BotType, tuple[int, int]] = {}
    for bot_type in BotType:
        bot_events = {event_type: counters.get(bot_metric(bot_type, event_type), 0) for event_type in EmailEventType}
        if any(bot_events.values()):
            by_bot_type[bot_type] = (bot_events[EmailEventType.OPENED], bot_events[EmailEventType.CLICKED])
    return EngagementCounts(human=human, everyone=everyone, apple_mpp_opens=apple_mpp_opens, by_bot_type=by_bot_type)
