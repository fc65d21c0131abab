"""Recording e-mail events with their bot verdicts, inferred opens and burst re-classification."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from server.domain.classification import (
    BotClassifier,
    EarlierClick,
    EmailEventFacts,
    EmailEventType,
    SignalKind,
    Verdict,
    has_prefetch_header,
)
from server.domain.contacts import Contact
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
    EngagementCounterKey,
    EngagementCounts,
    EngagementScope,
    PagePosition,
    TallyKey,
    encode_page_token,
    validate_listing,
    validate_scope,
)
from server.domain.errors import (
    FieldViolation,
    IdempotencyKeyReused,
    StorageUnavailable,
    TrackingError,
    ValidationFailed,
)
from server.domain.flow_triggers import FlowTrigger, email_engagement_trigger, retraction_trigger
from server.usecases.contacts import resolve_contacts
from server.usecases.message_history import MessageHistory
from server.usecases.ports import (
    Clock,
    EmailEventBatch,
    EmailEventStore,
    IdempotencyKeyTaken,
    MessageKey,
)

logger = logging.getLogger(__name__)

# Events per RecordEmailEvents call, all recorded in one transaction. The request must also fit
# the server's gRPC message size limit (4 MiB by default).
MAX_EVENTS_PER_CALL = 500


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


@dataclass(frozen=True, slots=True)
class PendingEmailEvent:
    """A validated event of a workspace, waiting for its batch."""

    workspace_id: uuid.UUID
    event: ValidEmailEvent


@dataclass(slots=True)
class _BatchWrites:
    """The writes of one batch transaction, collected while its events are recorded and stored at commit."""

    now: datetime
    histories: dict[MessageKey, MessageHistory]
    triggers: list[FlowTrigger | None] = field(default_factory=list)
    # Positions in `triggers` of the triggers each event of this batch produced.
    trigger_slots: dict[uuid.UUID, list[int]] = field(default_factory=dict)
    recorded_by_key: dict[tuple[uuid.UUID, str], RecordedEmailEvent] = field(default_factory=dict)

    def add_triggers(self, triggers: list[FlowTrigger]) -> None:
        for trigger in triggers:
            self.trigger_slots.setdefault(trigger.subject_id, []).append(len(self.triggers))
            self.triggers.append(trigger)

    def drop_triggers_of(self, event_id: uuid.UUID) -> bool:
        """Drop the triggers that an event of this batch produced; False when it produced none here."""
        slots = self.trigger_slots.pop(event_id, None)
        if slots is None:
            return False
        for slot in slots:
            self.triggers[slot] = None
        return True


class EmailEventRecorder:
    """Records deliveries, opens and clicks and keeps the human click and open counts consistent.

    For every contact and message, the unique human clickers never outnumber the unique
    human openers: a human click without a human open gets an inferred open.

    Events are recorded in batches, one transaction per batch. Within a batch, events are
    applied in order, and each one reads the events before it exactly as if they had been
    stored by earlier transactions.
    """

    def __init__(self, events: EmailEventStore, classifier: BotClassifier, clock: Clock) -> None:
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

    def prepare(self, workspace_id: uuid.UUID, request: EmailEventInput) -> PendingEmailEvent:
        """Validate one request; raise ValidationFailed listing every invalid field."""
        return PendingEmailEvent(workspace_id, validate_email_event(request, now=self._clock()))

    def record(self, workspace_id: uuid.UUID, request: EmailEventInput) -> RecordedEmailEvent:
        """Validate, classify and store one event; a retry with the same idempotency key stores nothing."""
        [outcome] = self.record_batch([self.prepare(workspace_id, request)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def record_many(
        self, workspace_id: uuid.UUID, requests: Sequence[EmailEventInput]
    ) -> list[RecordedEmailEvent | Exception]:
        """Record up to MAX_EVENTS_PER_CALL events in order; a failing event gets its error in its place.

        Raises ValidationFailed for an empty or too long list, and StorageUnavailable when the
        database fails. Then nothing of the list is stored, unless the batch had already fallen
        back to one transaction per event: the events recorded before the failure stay stored.
        """
        if not 1 <= len(requests) <= MAX_EVENTS_PER_CALL:
            raise ValidationFailed(
                [FieldViolation("requests", f"must contain 1 to {MAX_EVENTS_PER_CALL} events, got {len(requests)}")]
            )
        outcomes: list[RecordedEmailEvent | Exception | None] = []
        pending: list[PendingEmailEvent] = []
        for request in requests:
            try:
                pending.append(self.prepare(workspace_id, request))
                outcomes.append(None)
            except ValidationFailed as error:
                # The field paths stay relative to the event, as in a RecordEmailEvent call.
                outcomes.append(error)
        recorded = iter(self.record_batch(pending)) if pending else iter(())
        return [outcome if outcome is not None else next(recorded) for outcome in outcomes]

    def record_batch(self, batch: Sequence[PendingEmailEvent]) -> list[RecordedEmailEvent | Exception]:
        """Record a batch in one transaction and return each event's outcome in its place.

        A write that the database rejects fails the whole transaction, so the batch is then
        recorded again one event per transaction, and only the offending event fails. Raises
        StorageUnavailable when the database fails, because then nothing of the batch is stored.
        """
        try:
            return self._record_in_one_transaction(batch)
        except StorageUnavailable:
            raise
        except IdempotencyKeyTaken:
            if len(batch) > 1:
                return self._record_one_by_one(batch)
            # A concurrent transaction stored the key first; this run replays its event.
            logger.info(
                "concurrent retry stored the e-mail event first",
                extra={"workspace_id": str(batch[0].workspace_id), "idempotency_key": batch[0].event.idempotency_key},
            )
            try:
                return self._record_in_one_transaction(batch)
            except IdempotencyKeyTaken as error:
                return [error]
        except Exception as error:
            if len(batch) > 1:
                logger.warning(
                    "batch of e-mail events failed; recording its events one by one",
                    extra={"events": len(batch), "error": type(error).__name__},
                )
                return self._record_one_by_one(batch)
            logger.exception(
                "e-mail event failed to store",
                extra={"workspace_id": str(batch[0].workspace_id), "message_id": batch[0].event.message_id},
            )
            return [error]

    def _record_one_by_one(self, batch: Sequence[PendingEmailEvent]) -> list[RecordedEmailEvent | Exception]:
        return [outcome for pending in batch for outcome in self.record_batch([pending])]

    def _record_in_one_transaction(self, batch: Sequence[PendingEmailEvent]) -> list[RecordedEmailEvent | Exception]:
        outcomes: list[RecordedEmailEvent | Exception | None] = [None] * len(batch)
        with self._events.email_event_batch() as store:
            contacts = resolve_contacts(store, [(pending.workspace_id, pending.event.contact) for pending in batch])
            fingerprints: list[str] = []
            for index, (pending, contact) in enumerate(zip(batch, contacts, strict=True)):
                if isinstance(contact, Exception):
                    outcomes[index] = contact
                    fingerprints.append("")
                else:
                    fingerprints.append(fingerprint_email_event(contact.id, pending.event))
            self._replay_stored(store, batch, fingerprints, outcomes)

            keys = sorted(
                {
                    MessageKey(pending.workspace_id, pending.event.message_id, contact.id)
                    for pending, contact, outcome in zip(batch, contacts, outcomes, strict=True)
                    if outcome is None and not isinstance(contact, Exception)
                }
            )
            stored = store.lock_message_histories(keys, self._click_windows(batch, contacts))
            writes = _BatchWrites(
                now=self._clock(),
                histories={key: MessageHistory(key, stored[key]) for key in keys},
            )
            for index, pending in enumerate(batch):
                contact = contacts[index]
                if outcomes[index] is not None or isinstance(contact, Exception):
                    continue
                outcomes[index] = self._record_in_batch(store, writes, pending, contact.id, fingerprints[index])

            self._stage_writes(store, writes)
        assert all(outcome is not None for outcome in outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    def _click_windows(
        self, batch: Sequence[PendingEmailEvent], contacts: Sequence[Contact | TrackingError]
    ) -> dict[MessageKey, tuple[datetime, datetime]]:
        """Return, per message key, the span within which burst rules read earlier clicks for this batch."""
        windows: dict[MessageKey, tuple[datetime, datetime]] = {}
        for pending, contact in zip(batch, contacts, strict=True):
            if isinstance(contact, Exception) or pending.event.event_type is not EmailEventType.CLICKED:
                continue
            key = MessageKey(pending.workspace_id, pending.event.message_id, contact.id)
            start = pending.event.occurred_at - self._burst_window
            end = pending.event.occurred_at + self._burst_window
            if key in windows:
                start, end = min(start, windows[key][0]), max(end, windows[key][1])
            windows[key] = (start, end)
        return windows

    def _replay_stored(
        self,
        store: EmailEventBatch,
        batch: Sequence[PendingEmailEvent],
        fingerprints: list[str],
        outcomes: list[RecordedEmailEvent | Exception | None],
    ) -> None:
        """Set the outcome of each retry of a stored event: the stored event, or IdempotencyKeyReused."""
        keys_by_workspace: dict[uuid.UUID, set[str]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            if outcome is None and pending.event.idempotency_key is not None:
                keys_by_workspace.setdefault(pending.workspace_id, set()).add(pending.event.idempotency_key)
        found = {
            (workspace_id, key): event
            for workspace_id, keys in keys_by_workspace.items()
            for key, event in store.email_events_by_idempotency_key(workspace_id, keys).items()
        }
        for index, pending in enumerate(batch):
            key = pending.event.idempotency_key
            earlier = found.get((pending.workspace_id, key)) if key is not None else None
            if outcomes[index] is None and earlier is not None:
                outcomes[index] = _replay_outcome(earlier, fingerprints[index])

    def _record_in_batch(
        self,
        store: EmailEventBatch,
        writes: _BatchWrites,
        pending: PendingEmailEvent,
        contact_id: uuid.UUID,
        fingerprint: str,
    ) -> RecordedEmailEvent | Exception:
        """Record one event of the batch; its failure is returned and leaves the batch's other events alone."""
        key = pending.event.idempotency_key
        if key is not None:
            earlier = writes.recorded_by_key.get((pending.workspace_id, key))
            if earlier is not None:
                return _replay_outcome(earlier.event, fingerprint)
        history = writes.histories[MessageKey(pending.workspace_id, pending.event.message_id, contact_id)]
        try:
            recorded = self._record_in_history(store, writes, history, pending, contact_id, fingerprint)
        except StorageUnavailable:
            raise
        except TrackingError as error:
            return error
        except Exception as error:
            logger.exception(
                "e-mail event failed to record",
                extra={"workspace_id": str(pending.workspace_id), "message_id": pending.event.message_id},
            )
            return error
        if key is not None:
            writes.recorded_by_key[(pending.workspace_id, key)] = recorded
        return recorded

    def _record_in_history(
        self,
        store: EmailEventBatch,
        writes: _BatchWrites,
        history: MessageHistory,
        pending: PendingEmailEvent,
        contact_id: uuid.UUID,
        fingerprint: str,
    ) -> RecordedEmailEvent:
        valid = pending.event
        now = writes.now
        # A stored DELIVERED event is the authority on delivery time; the request's value fills in.
        delivered_at = history.delivery_time() or valid.delivered_at
        nearby_clicks: list[EmailEvent] = []
        if valid.event_type is EmailEventType.CLICKED:
            nearby_clicks = history.clicks_between(
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
                EarlierClick(click_id=str(click.id), occurred_at=click.occurred_at, is_human=not click.verdict.is_bot)
                for click in nearby_clicks
            ),
        )
        verdict = self._classifier.classify(facts)
        event = self._new_event(pending.workspace_id, contact_id, valid, verdict, fingerprint, now)
        history.add(event)

        reclassified: list[EmailEvent] = []
        if verdict.reclassify_click_ids:
            burst_ids = {uuid.UUID(click_id) for click_id in verdict.reclassify_click_ids}
            reclassified = history.mark_clicks_as_bots(burst_ids, self._burst_verdict)
        if valid.event_type is EmailEventType.DELIVERED and (delivered_at is None or valid.occurred_at <= delivered_at):
            reclassified += self._reclassify_early_clicks(history, valid.occurred_at)

        created: list[EmailEvent] = []
        human_click = valid.event_type is EmailEventType.CLICKED and not verdict.is_bot
        if (human_click or reclassified) and not history.has_human_open():
            first_click = history.earliest_human_click()
            if first_click is not None:
                inferred_open = self._inferred_open(first_click, now)
                history.add(inferred_open)
                created.append(inferred_open)

        writes.add_triggers(self._flow_triggers(store, writes, [event, *created], reclassified, now))
        return RecordedEmailEvent(event=event, created=tuple(created), reclassified=tuple(reclassified))

    def _new_event(
        self,
        workspace_id: uuid.UUID,
        contact_id: uuid.UUID,
        valid: ValidEmailEvent,
        verdict: Verdict,
        fingerprint: str,
        now: datetime,
    ) -> EmailEvent:
        return EmailEvent(
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

    def _stage_writes(self, store: EmailEventBatch, writes: _BatchWrites) -> None:
        """Hand the batch's new events, verdict changes, counter changes and triggers to the store."""
        created: list[EmailEvent] = []
        reclassified: list[EmailEvent] = []
        counter_deltas: Counter[EngagementCounterKey] = Counter()
        tallies: dict[MessageKey, tuple[Counter[TallyKey], bool]] = {}
        for key, history in writes.histories.items():
            new_events = history.created_events()
            changed_events = history.reclassified_stored_events()
            if not new_events and not changed_events:
                continue
            created += new_events
            reclassified += changed_events
            counter_deltas.update(history.counter_deltas())
            tallies[key] = (history.tally(), history.has_recorded_human_open())
        store.add_events(created)
        store.update_verdicts(reclassified)
        store.add_to_engagement_counters({key: delta for key, delta in counter_deltas.items() if delta})
        store.update_message_tallies(tallies)
        store.add_triggers([trigger for trigger in writes.triggers if trigger is not None], writes.now)

    def _flow_triggers(
        self,
        store: EmailEventBatch,
        writes: _BatchWrites,
        stored: list[EmailEvent],
        reclassified: list[EmailEvent],
        now: datetime,
    ) -> list[FlowTrigger]:
        """Build triggers for the human opens and clicks just recorded, and retract those of new bots.

        A trigger that an earlier event of the same batch produced is dropped instead: no
        consumer has seen it, so it needs no retraction.
        """
        triggers = [trigger for trigger in map(email_engagement_trigger, stored) if trigger is not None]
        committed = {event.id: event for event in reclassified if not writes.drop_triggers_of(event.id)}
        if committed:
            workspace_id = reclassified[0].workspace_id
            for earlier in store.triggers_of_events(workspace_id, list(committed)):
                subject = committed[earlier.subject_id]
                reason = subject.verdict.signals[0] if subject.verdict.signals else "reclassified"
                triggers.append(retraction_trigger(subject, earlier, reason, now))
        return triggers

    def _reclassify_early_clicks(self, history: MessageHistory, delivered_at: datetime) -> list[EmailEvent]:
        """Turn human clicks that a late-arriving delivery shows were too early into timing bots."""
        soon = delivered_at + self._classifier.rules.soon_after_delivery
        early = [click for click in history.clicks_between(EARLIEST_EVENT_TIME, soon) if not click.verdict.is_bot]
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
                changed += history.mark_clicks_as_bots({click.id for click in clicks}, verdict)
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


def _replay_outcome(earlier: EmailEvent, fingerprint: str) -> RecordedEmailEvent | Exception:
    """Return the earlier event for a retry with the same content, IdempotencyKeyReused for other content."""
    if earlier.request_fingerprint != fingerprint:
        assert earlier.idempotency_key is not None
        return IdempotencyKeyReused(earlier.idempotency_key, str(earlier.id))
    return RecordedEmailEvent(event=earlier)
