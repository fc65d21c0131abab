"""Instrumenting e-mails with signed tracking links, and recording the gateway's hits on them."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from server.domain.classification import EmailEventType
from server.domain.contacts import check_contact_reference
from server.domain.email_events import EmailEventInput, TimestampInput
from server.domain.errors import LinkSigningNotConfigured, StorageUnavailable, TrackingError
from server.domain.instrumentation import InstrumentedHtml, instrument_html
from server.domain.tracking_links import SigningKeyring, TrackingKind, verify_tracking_token
from server.domain.validation import Violations, check_text
from server.usecases.contacts import ContactDirectory
from server.usecases.email_events import EmailEventRecorder, PendingEmailEvent, RecordedEmailEvent

logger = logging.getLogger(__name__)

MAX_HTML_BYTES = 2 * 1024 * 1024
MAX_HITS_PER_BATCH = 500
# A honeypot token carries no destination, so its clicks are stored with this URL. The .invalid
# top-level domain is reserved and never resolves.
HONEYPOT_DESTINATION = "https://honeypot.invalid/"


@dataclass(frozen=True, slots=True)
class InstrumentInput:
    """An instrumentation request as the caller sent it."""

    email: str
    contact_id: str
    message_id: str
    campaign_id: str
    html: str


@dataclass(frozen=True, slots=True)
class TrackingHitInput:
    """One hit the gateway received, as it sent it."""

    token: str
    kind: TrackingKind | None
    occurred_at: TimestampInput | None
    client_ip: str
    user_agent: str
    http_method: str
    request_headers: dict[str, str]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Settings that signing and verifying tracking links need; None marks a missing setting."""

    keyring: SigningKeyring | None
    gateway_base_url: str | None


class TrackingLinks:
    """Signs tracking links into e-mails and records hits on them as e-mail events."""

    def __init__(self, contacts: ContactDirectory, recorder: EmailEventRecorder, settings: LinkSettings) -> None:
        self._contacts = contacts
        self._recorder = recorder
        self._settings = settings

    def instrument(self, workspace_id: uuid.UUID, request: InstrumentInput) -> InstrumentedHtml:
        keyring = self._require_keyring()
        if self._settings.gateway_base_url is None:
            raise LinkSigningNotConfigured("--tracking-base-url")
        violations = Violations()
        reference = check_contact_reference(violations, request.email, request.contact_id)
        message_id = check_text(violations, "message_id", request.message_id, max_length=200, required=True)
        campaign_id = check_text(violations, "campaign_id", request.campaign_id, max_length=200)
        if not request.html:
            violations.add("html", "is required")
        elif len(request.html.encode("utf-8", errors="surrogatepass")) > MAX_HTML_BYTES:
            violations.add("html", f"must be at most {MAX_HTML_BYTES} bytes of UTF-8")
        violations.raise_if_any()
        assert reference is not None
        assert message_id is not None

        contact = self._contacts.resolve(workspace_id, reference)
        return instrument_html(
            request.html,
            keyring=keyring,
            gateway_base_url=self._settings.gateway_base_url,
            workspace_id=workspace_id,
            message_id=message_id,
            contact_id=contact.id,
            campaign_id=campaign_id,
        )

    def prepare_hit(self, hit: TrackingHitInput) -> PendingEmailEvent:
        """Verify the hit's token and validate the event it stands for; raise a TrackingError for this hit."""
        keyring = self._require_keyring()
        violations = Violations()
        if hit.kind is None:
            violations.add("kind", "is required: OPEN, CLICK or HONEYPOT")
        if hit.occurred_at is None:
            violations.add("occurred_at", "is required")
        if not hit.idempotency_key:
            violations.add("idempotency_key", "is required")
        violations.raise_if_any()
        assert hit.kind is not None

        claims = verify_tracking_token(hit.token, keyring, expected_kind=hit.kind)
        event = EmailEventInput(
            event_type=EmailEventType.OPENED if claims.kind is TrackingKind.OPEN else EmailEventType.CLICKED,
            message_id=claims.message_id,
            contact_id=str(claims.contact_id),
            campaign_id=claims.campaign_id or "",
            occurred_at=hit.occurred_at,
            client_ip=hit.client_ip,
            user_agent=hit.user_agent,
            http_method=hit.http_method,
            request_headers=hit.request_headers,
            link_url=claims.destination or ("" if claims.kind is TrackingKind.OPEN else HONEYPOT_DESTINATION),
            link_id=claims.link_id or ("honeypot" if claims.kind is TrackingKind.HONEYPOT else ""),
            honeypot_link=claims.kind is TrackingKind.HONEYPOT,
            idempotency_key=hit.idempotency_key,
        )
        return self._recorder.prepare(claims.workspace_id, event)

    def record_hits(self, hits: list[TrackingHitInput]) -> list[RecordedEmailEvent | Exception]:
        """Record the hits in one batch; a failing hit gets its error and leaves the others alone.

        When the database is unavailable, every valid hit gets StorageUnavailable.
        """
        self._require_keyring()
        violations = Violations()
        if not 1 <= len(hits) <= MAX_HITS_PER_BATCH:
            violations.add("hits", f"must contain 1 to {MAX_HITS_PER_BATCH} hits, got {len(hits)}")
        violations.raise_if_any()

        outcomes: list[RecordedEmailEvent | Exception | None] = []
        pending: list[PendingEmailEvent] = []
        for hit in hits:
            try:
                pending.append(self.prepare_hit(hit))
                outcomes.append(None)
            except TrackingError as error:
                logger.info(
                    "tracking hit rejected",
                    extra={"idempotency_key": hit.idempotency_key, "error": type(error).__name__},
                )
                outcomes.append(error)
            except Exception as error:
                # A bug on one hit must not fail the others, which the gateway would send again.
                logger.exception("tracking hit failed unexpectedly", extra={"idempotency_key": hit.idempotency_key})
                outcomes.append(error)
        recorded: list[RecordedEmailEvent | Exception] = []
        if pending:
            try:
                recorded = self._recorder.record_batch(pending)
            except StorageUnavailable as error:
                recorded = [error] * len(pending)
        next_recorded = iter(recorded)
        return [outcome if outcome is not None else next(next_recorded) for outcome in outcomes]

    def _require_keyring(self) -> SigningKeyring:
        if self._settings.keyring is None:
            raise LinkSigningNotConfigured("--link-signing-keys")
        return self._settings.keyring
