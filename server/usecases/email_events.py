"""Recording e-mail events with their bot verdicts, inferred opens and burst re-classification."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from server.domain.classification import (
    BotClassifier,
    EarlierClick,
    EmailEventFacts,
    EmailEventType,
    SignalKind,
    has_prefetch_header,
)
from server.domain.email_events import (
    EARLIEST_EVENT_TIME,
    EmailEvent,
    EmailEventInput,
    EventVerdict,
    ValidEmailEvent,
    fingerprint_email_event,
    validate_email_event,
)
from server.domain.engagement import (
    EmailEventListInput,
    EmailEventQuery,
    EngagementCounts,
    EngagementScope,
    PagePosition,
    encode_page_token,
    validate_listing,
    validate_scope,
)
from server.domain.errors import IdempotencyKeyReused
from server.domain.flow_triggers import FlowTrigger, email_engagement_trigger, retraction_trigger
from server.usecases.contacts import ContactDirectory
from server.usecases.ports import Clock, EmailEventStore, IdempotencyKeyTaken, MessageEventsTransaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordedEmailEvent:
    """The outcome of one recording call."""

    event: EmailEvent
    created: tuple[EmailEvent, ...] = ()
    reclassified: tuple[EmailEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class EmailEventPage:
    """One page of a listing and the token of the next one ("" on the last page)."""

    events: list[EmailEvent]
    next_page_token: str


class EmailEventRecorder:
    """Records deliveries, opens and clicks and keeps the human click and open counts consistent.

    For every contact and message, the unique human clickers never outnumber the unique
    human openers: a human click without a human open gets an inferred open.
    """

    def __init__(
        self, contacts: ContactDirectory, events: EmailEventStore, classifier: BotClassifier, clock: Clock
    ) -> None:
        self._contacts = contacts
        self._events = events
        self._classifier = classifier
        self._clock = clock
        self._burst_window = max(rule.window for rule in classifier.rules.click_bursts)
        burst_rating = classifier.rules.signal_ratings[SignalKind.CLICK_BURST]
        self._burst_verdict = EventVerdict(
            is_bot=True,
            bot_type=burst_rating.bot_type,
            confidence=burst_rating.confidence,
            signals=(SignalKind.CLICK_BURST.value,),
            classifier_version=classifier.version,
        )

    def record(self, workspace_id: uuid.UUID, request: EmailEventInput) -> RecordedEmailEvent:
        """Validate, classify and store one event; a retry with the same idempotency key stores nothing."""
        now = self._clock()
        valid = validate_email_event(request, now=now)
        contact = self._contacts.resolve(workspace_id, valid.contact)
        fingerprint = fingerprint_email_event(contact.id, valid)

        if valid.idempotency_key is not None:
            earlier = self._events.find_email_event_by_idempotency_key(workspace_id, valid.idempotency_key)
            if earlier is not None:
                return RecordedEmailEvent(event=_replay(earlier, fingerprint))

        try:
            with self._events.message_events(workspace_id, contact.id, valid.message_id) as transaction:
                return self._record_locked(transaction, workspace_id, contact.id, valid, fingerprint, now)
        except IdempotencyKeyTaken:
            assert valid.idempotency_key is not None
            logger.info(
                "concurrent retry stored the e-mail event first",
                extra={"workspace_id": str(workspace_id), "idempotency_key": valid.idempotency_key},
            )
            earlier = self._events.find_email_event_by_idempotency_key(workspace_id, valid.idempotency_key)
            if earlier is None:
                raise
            return RecordedEmailEvent(event=_replay(earlier, fingerprint))

    def _record_locked(
        self,
        transaction: MessageEventsTransaction,
        workspace_id: uuid.UUID,
        contact_id: uuid.UUID,
        valid: ValidEmailEvent,
        fingerprint: str,
        now: datetime,
    ) -> RecordedEmailEvent:
        # A stored DELIVERED event is the authority on delivery time; the request's value fills in.
        delivered_at = transaction.delivery_time() or valid.delivered_at
        nearby_clicks = []
        if valid.event_type is EmailEventType.CLICKED:
            nearby_clicks = transaction.clicks_between(
                valid.occurred_at - self._burst_window, valid.occurred_at + self._burst_window
            )
        facts = EmailEventFacts(
            event_type=valid.event_type,
            occurred_at=valid.occurred_at,
            client_ip=valid.client_ip,
            user_agent=valid.user_agent,
            http_method=valid.http_method or "",
            has_prefetch_header=has_prefetch_header(valid.request_headers),
            link_id=valid.link_id,
            link_url=valid.link_url,
            is_honeypot_link=valid.honeypot_link,
            delivered_at=delivered_at,
            earlier_clicks=tuple(
                EarlierClick(click_id=str(click.id), occurred_at=click.occurred_at, is_human=not click.is_bot)
                for click in nearby_clicks
            ),
        )
        verdict = self._classifier.classify(facts)
        event = EmailEvent(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            contact_id=contact_id,
            message_id=valid.message_id,
            campaign_id=valid.campaign_id,
            event_type=valid.event_type,
            occurred_at=valid.occurred_at,
            recorded_at=now,
            client_ip=str(valid.client_ip) if valid.client_ip is not None else None,
            user_agent=valid.user_agent,
            http_method=valid.http_method,
            request_headers=valid.request_headers,
            link_url=valid.link_url,
            link_id=valid.link_id,
            honeypot_link=valid.honeypot_link,
            delivered_at=valid.delivered_at,
            verdict=EventVerdict(
                is_bot=verdict.is_bot,
                bot_type=verdict.bot_type,
                confidence=verdict.confidence,
                signals=verdict.signals,
                classifier_version=verdict.classifier_version,
            ),
            inferred=False,
            inferred_from_event_id=None,
            idempotency_key=valid.idempotency_key,
            request_fingerprint=fingerprint,
        )
        transaction.add_event(event)

        reclassified: list[EmailEvent] = []
        if verdict.reclassify_click_ids:
            burst_ids = [uuid.UUID(click_id) for click_id in verdict.reclassify_click_ids]
            reclassified = transaction.mark_clicks_as_bots(burst_ids, self._burst_verdict)
        if valid.event_type is EmailEventType.DELIVERED and (delivered_at is None or valid.occurred_at <= delivered_at):
            reclassified += self._reclassify_early_clicks(transaction, valid.occurred_at)

        created: list[EmailEvent] = []
        human_click = valid.event_type is EmailEventType.CLICKED and not verdict.is_bot
        if (human_click or reclassified) and not transaction.has_human_open():
            first_click = transaction.earliest_human_click()
            if first_click is not None:
                inferred_open = self._inferred_open(first_click, now)
                transaction.add_event(inferred_open)
                created.append(inferred_open)

        transaction.add_triggers(self._flow_triggers(transaction, [event, *created], reclassified, now), now)
        return RecordedEmailEvent(event=event, created=tuple(created), reclassified=tuple(reclassified))

    def _flow_triggers(
        self,
        transaction: MessageEventsTransaction,
        stored: list[EmailEvent],
        reclassified: list[EmailEvent],
        now: datetime,
    ) -> list[FlowTrigger]:
        """Build triggers for the human opens and clicks just stored, and retract those of new bots."""
        triggers = [trigger for trigger in map(email_engagement_trigger, stored) if trigger is not None]
        if reclassified:
            events_by_id = {event.id: event for event in reclassified}
            for earlier in transaction.triggers_of_events(list(events_by_id)):
                subject = events_by_id[earlier.subject_id]
                reason = subject.verdict.signals[0] if subject.verdict.signals else "reclassified"
                triggers.append(retraction_trigger(subject, earlier, reason, now))
        return triggers

    def _reclassify_early_clicks(
        self, transaction: MessageEventsTransaction, delivered_at: datetime
    ) -> list[EmailEvent]:
        """Turn human clicks that a late-arriving delivery shows were too early into timing bots."""
        soon = delivered_at + self._classifier.rules.soon_after_delivery
        early = [click for click in transaction.clicks_between(EARLIEST_EVENT_TIME, soon) if not click.is_bot]
        changed: list[EmailEvent] = []
        for signal, clicks in (
            (SignalKind.CLICK_BEFORE_DELIVERY, [click for click in early if click.occurred_at < delivered_at]),
            (SignalKind.CLICK_SOON_AFTER_DELIVERY, [click for click in early if click.occurred_at >= delivered_at]),
        ):
            if clicks:
                rating = self._classifier.rules.signal_ratings[signal]
                verdict = EventVerdict(
                    is_bot=True,
                    bot_type=rating.bot_type,
                    confidence=rating.confidence,
                    signals=(signal.value,),
                    classifier_version=self._classifier.version,
                )
                changed += transaction.mark_clicks_as_bots([click.id for click in clicks], verdict)
        return changed

    def _inferred_open(self, click: EmailEvent, now: datetime) -> EmailEvent:
        """Build the OPENED event that a human click implies, at the click's time."""
        return EmailEvent(
            id=uuid.uuid4(),
            workspace_id=click.workspace_id,
            contact_id=click.contact_id,
            message_id=click.message_id,
            campaign_id=click.campaign_id,
            event_type=EmailEventType.OPENED,
            occurred_at=click.occurred_at,
            recorded_at=now,
            client_ip=click.client_ip,
            user_agent=click.user_agent,
            http_method=None,
            request_headers={},
            link_url=None,
            link_id=None,
            honeypot_link=False,
            delivered_at=None,
            verdict=EventVerdict(
                is_bot=False, bot_type=None, confidence=None, signals=(), classifier_version=self._classifier.version
            ),
            inferred=True,
            inferred_from_event_id=click.id,
            idempotency_key=None,
            request_fingerprint=click.request_fingerprint,
        )

    def list_events(self, workspace_id: uuid.UUID, request: EmailEventListInput) -> EmailEventPage:
        """Return one page of events, newest first, and the token of the next page."""
        listing_filter, page_size, position = validate_listing(request, now=self._clock())
        # One extra row shows whether another page follows.
        query = EmailEventQuery(workspace_id=workspace_id, filter=listing_filter, after=position, limit=page_size + 1)
        events = self._events.list_email_events(query)
        if len(events) <= page_size:
            return EmailEventPage(events=events, next_page_token="")
        page = events[:page_size]
        last = page[-1]
        token = encode_page_token(PagePosition(last.occurred_at, last.id), listing_filter.digest())
        return EmailEventPage(events=page, next_page_token=token)

    def count_engagement(self, workspace_id: uuid.UUID, *, message_id: str, campaign_id: str) -> EngagementCounts:
        scope: EngagementScope = validate_scope(message_id, campaign_id)
        return self._events.count_engagement(workspace_id, scope)


def _replay(earlier: EmailEvent, fingerprint: str) -> EmailEvent:
    if earlier.request_fingerprint != fingerprint:
        assert earlier.idempotency_key is not None
        raise IdempotencyKeyReused(earlier.idempotency_key, str(earlier.id))
    return earlier
