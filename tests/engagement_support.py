"""Test helpers for engagement counts: an e-mail event factory and counts computed straight from events.

`expected_engagement_counts` restates the definition of each count over a plain list of
events, without counters, so tests can compare the counters against it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from server.domain.classification import BotType, Confidence, EmailEventType
from server.domain.email_events import EmailEvent, EventVerdict
from server.domain.engagement import EngagementCounts, EventCounts

OCCURRED_AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HUMAN = EventVerdict(is_bot=False, bot_type=None, confidence=None, signals=(), classifier_version="1")


def bot_verdict(bot_type: BotType) -> EventVerdict:
    return EventVerdict(
        is_bot=True,
        bot_type=bot_type,
        confidence=Confidence.HIGH,
        signals=(f"test:{bot_type.value}",),
        classifier_version="1",
    )


def email_event(
    workspace_id: uuid.UUID,
    contact_id: uuid.UUID,
    message_id: str,
    event_type: EmailEventType,
    *,
    campaign_id: str | None = None,
    verdict: EventVerdict = HUMAN,
    inferred_from: EmailEvent | None = None,
) -> EmailEvent:
    """Return a new stored event with a fresh id; `inferred_from` makes it an open inferred from that click."""
    return EmailEvent(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        contact_id=contact_id,
        message_id=message_id,
        campaign_id=campaign_id,
        event_type=event_type,
        occurred_at=OCCURRED_AT,
        recorded_at=OCCURRED_AT,
        client_ip="203.0.113.7",
        user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        http_method="GET",
        request_headers={},
        link_url="https://shop.example.com/" if event_type is EmailEventType.CLICKED else None,
        link_id=None,
        honeypot_link=False,
        delivered_at=None,
        verdict=verdict,
        inferred=inferred_from is not None,
        inferred_from_event_id=inferred_from.id if inferred_from is not None else None,
        idempotency_key=None,
        request_fingerprint="0" * 64,
    )


def expected_engagement_counts(
    events: Sequence[EmailEvent],
    workspace_id: uuid.UUID,
    *,
    message_id: str | None = None,
    campaign_id: str | None = None,
) -> EngagementCounts:
    """Compute the counts of one message or one campaign directly from all stored events."""
    in_workspace = [event for event in events if event.workspace_id == workspace_id]
    if message_id is not None:
        scoped = [event for event in in_workspace if event.message_id == message_id]
    else:
        campaign_pairs = {
            (event.message_id, event.contact_id) for event in in_workspace if event.campaign_id == campaign_id
        }
        scoped = [event for event in in_workspace if (event.message_id, event.contact_id) in campaign_pairs]

    apple_mpp_opens = [
        event
        for event in scoped
        if event.event_type is EmailEventType.OPENED and event.verdict.bot_type is BotType.APPLE_MPP
    ]
    by_bot_type: dict[BotType, tuple[int, int]] = {}
    for event in scoped:
        bot_type = event.verdict.bot_type
        if not event.verdict.is_bot or bot_type is None:
            continue
        opens, clicks = by_bot_type.get(bot_type, (0, 0))
        if event.event_type is EmailEventType.OPENED:
            opens += 1
        if event.event_type is EmailEventType.CLICKED:
            clicks += 1
        by_bot_type[bot_type] = (opens, clicks)

    return EngagementCounts(
        human=_counts_by_type([event for event in scoped if not event.verdict.is_bot]),
        everyone=_counts_by_type(scoped),
        apple_mpp_opens=EventCounts(len(apple_mpp_opens), _pair_count(apple_mpp_opens)),
        by_bot_type=by_bot_type,
    )


def _counts_by_type(events: Sequence[EmailEvent]) -> dict[EmailEventType, EventCounts]:
    counts: dict[EmailEventType, EventCounts] = {}
    for event_type in EmailEventType:
        of_type = [event for event in events if event.event_type is event_type]
        if of_type:
            counts[event_type] = EventCounts(len(of_type), _pair_count(of_type))
    return counts


def _pair_count(events: Sequence[EmailEvent]) -> int:
    return len({(event.workspace_id, event.message_id, event.contact_id) for event in events})
