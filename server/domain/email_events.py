"""E-mail events: validation of a recording request and the stored event with its verdict."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from server.domain.classification import BotType, Confidence, EmailEventType
from server.domain.contacts import ContactReference, check_contact_reference
from server.domain.validation import (
    Violations,
    check_http_url,
    check_idempotency_key,
    check_text,
    has_control_characters,
    shown,
)

MAX_MESSAGE_ID_LENGTH = 200
MAX_LINK_ID_LENGTH = 200
MAX_USER_AGENT_LENGTH = 2048
MAX_HTTP_METHOD_LENGTH = 10
MAX_HEADERS = 20
MAX_HEADER_NAME_LENGTH = 100
MAX_HEADER_VALUE_LENGTH = 1024
# Events may carry the sender's clock, which can run slightly ahead of ours.
MAX_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimestampInput:
    """A `google.protobuf.Timestamp` as sent, before validation."""

    seconds: int
    nanos: int


@dataclass(frozen=True, slots=True)
class EmailEventInput:
    """An e-mail event as the caller sent it, before validation. `event_type` is None when unknown."""

    event_type: EmailEventType | None
    message_id: str = ""
    email: str = ""
    contact_id: str = ""
    campaign_id: str = ""
    occurred_at: TimestampInput | None = None
    client_ip: str = ""
    user_agent: str = ""
    http_method: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    link_url: str = ""
    link_id: str = ""
    honeypot_link: bool = False
    delivered_at: TimestampInput | None = None
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class ValidEmailEvent:
    """A validated e-mail event request; `occurred_at` is filled with the server time when absent."""

    contact: ContactReference
    # Whether the caller sent `occurred_at`; only a sent time is part of the request's content.
    occurred_at_sent: bool
    message_id: str
    campaign_id: str | None
    event_type: EmailEventType
    occurred_at: datetime
    client_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    user_agent: str
    http_method: str | None
    request_headers: dict[str, str]
    link_url: str | None
    link_id: str | None
    honeypot_link: bool
    delivered_at: datetime | None
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class EventVerdict:
    """The bot classification stored with an event."""

    is_bot: bool
    bot_type: BotType | None
    confidence: Confidence | None
    signals: tuple[str, ...]
    classifier_version: str


@dataclass(frozen=True, slots=True)
class EmailEvent:
    """A stored e-mail event: the raw facts as received, the verdict, and how it came to be."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    contact_id: uuid.UUID
    message_id: str
    campaign_id: str | None
    event_type: EmailEventType
    occurred_at: datetime
    recorded_at: datetime
    client_ip: str | None
    user_agent: str
    http_method: str | None
    request_headers: dict[str, str]
    link_url: str | None
    link_id: str | None
    honeypot_link: bool
    delivered_at: datetime | None
    verdict: EventVerdict
    inferred: bool
    inferred_from_event_id: uuid.UUID | None
    idempotency_key: str | None
    request_fingerprint: str


def check_timestamp(
    violations: Violations, field_name: str, value: TimestampInput, *, now: datetime
) -> datetime | None:
    """Convert a timestamp to an aware UTC datetime between 2000-01-01 and now plus 5 minutes."""
    if not 0 <= value.nanos < 1_000_000_000:
        violations.add(f"{field_name}.nanos", f"must be between 0 and 999999999, got {value.nanos}")
        return None
    latest = now + MAX_CLOCK_SKEW
    if not EARLIEST_EVENT_TIME.timestamp() <= value.seconds <= latest.timestamp():
        violations.add(
            field_name,
            f"must be between {EARLIEST_EVENT_TIME.date().isoformat()} and 5 minutes after the server time "
            f"{now.isoformat(timespec='seconds')}",
        )
        return None
    # Stored with microsecond precision, as both databases keep it.
    return datetime.fromtimestamp(value.seconds, UTC) + timedelta(microseconds=value.nanos // 1000)


def validate_email_event(request: EmailEventInput, *, now: datetime) -> ValidEmailEvent:
    """Check every field of an e-mail event request and raise ValidationFailed listing all violations."""
    violations = Violations()
    contact = check_contact_reference(violations, request.email, request.contact_id)
    message_id = check_text(
        violations, "message_id", request.message_id, max_length=MAX_MESSAGE_ID_LENGTH, required=True
    )
    campaign_id = check_text(violations, "campaign_id", request.campaign_id, max_length=MAX_MESSAGE_ID_LENGTH)
    if request.event_type is None:
        violations.add("event_type", "is required: DELIVERED, OPENED or CLICKED")
    occurred_at = now
    if request.occurred_at is not None:
        occurred_at = check_timestamp(violations, "occurred_at", request.occurred_at, now=now) or now
    delivered_at = None
    if request.delivered_at is not None:
        delivered_at = check_timestamp(violations, "delivered_at", request.delivered_at, now=now)
    client_ip = _check_ip(violations, request.client_ip)
    user_agent = _check_header_text(violations, "user_agent", request.user_agent, MAX_USER_AGENT_LENGTH)
    http_method = _check_http_method(violations, request.http_method)
    headers = _check_headers(violations, request.request_headers)
    link_url, link_id = _check_link(violations, request)
    idempotency_key = check_idempotency_key(violations, "idempotency_key", request.idempotency_key)

    violations.raise_if_any()
    assert contact is not None
    assert message_id is not None
    assert request.event_type is not None
    return ValidEmailEvent(
        contact=contact,
        occurred_at_sent=request.occurred_at is not None,
        message_id=message_id,
        campaign_id=campaign_id,
        event_type=request.event_type,
        occurred_at=occurred_at,
        client_ip=client_ip,
        user_agent=user_agent or "",
        http_method=http_method,
        request_headers=headers,
        link_url=link_url,
        link_id=link_id,
        honeypot_link=request.honeypot_link,
        delivered_at=delivered_at,
        idempotency_key=idempotency_key,
    )


def _check_ip(violations: Violations, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        violations.add("client_ip", f"must be an IPv4 or IPv6 address, got {shown(value)}")
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # A zone id names an interface of the client's own host and means nothing here.
        violations.add("client_ip", "must be an IP address without a zone id (the part after '%')")
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _check_header_text(violations: Violations, field_name: str, value: str, max_length: int) -> str | None:
    if len(value) > max_length:
        violations.add(field_name, f"must be at most {max_length} characters, got {len(value)}")
        return None
    # HTTP header values may contain horizontal tabs but no other control characters.
    if has_control_characters(value.replace("\t", " ")):
        violations.add(field_name, "must not contain control characters other than tab")
        return None
    return value


def _check_http_method(violations: Violations, value: str) -> str | None:
    if not value:
        return None
    if len(value) > MAX_HTTP_METHOD_LENGTH or not value.isascii() or not value.isalpha():
        violations.add("http_method", f"must be an HTTP method such as GET or HEAD, got {value[:20]!r}")
        return None
    return value.upper()


def _check_headers(violations: Violations, headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        violations.add("request_headers", f"must have at most {MAX_HEADERS} entries, got {len(headers)}")
        return {}
    checked: dict[str, str] = {}
    for name, value in headers.items():
        path = f"request_headers[{name[:MAX_HEADER_NAME_LENGTH]!r}]"
        if not name or len(name) > MAX_HEADER_NAME_LENGTH or not name.isascii() or has_control_characters(name):
            violations.add(path, f"header names must be 1 to {MAX_HEADER_NAME_LENGTH} printable ASCII characters")
            continue
        checked_value = _check_header_text(violations, path, value, MAX_HEADER_VALUE_LENGTH)
        if checked_value is not None:
            checked[name] = checked_value
    return checked


def _check_link(violations: Violations, request: EmailEventInput) -> tuple[str | None, str | None]:
    if request.event_type is not EmailEventType.CLICKED:
        for field_name, value in (
            ("link_url", request.link_url),
            ("link_id", request.link_id),
            ("honeypot_link", request.honeypot_link),
        ):
            if value:
                violations.add(field_name, "must be empty unless event_type is CLICKED")
        return None, None
    link_url = check_http_url(violations, "link_url", request.link_url, required=True)
    link_id = check_text(violations, "link_id", request.link_id, max_length=MAX_LINK_ID_LENGTH)
    return link_url, link_id


def fingerprint_email_event(contact_id: uuid.UUID, event: ValidEmailEvent) -> str:
    """Return a SHA-256 hex digest of the event's content, to tell an idempotent retry from key reuse.

    `occurred_at` counts only when the caller sent it, because a retry without it gets a new
    server time.
    """
    content = {
        "contact_id": str(contact_id),
        "message_id": event.message_id,
        "campaign_id": event.campaign_id,
        "event_type": event.event_type.value,
        "client_ip": str(event.client_ip) if event.client_ip else None,
        "user_agent": event.user_agent,
        "http_method": event.http_method,
        "request_headers": event.request_headers,
        "link_url": event.link_url,
        "link_id": event.link_id,
        "honeypot_link": event.honeypot_link,
        "delivered_at": event.delivered_at.isoformat() if event.delivered_at else None,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at_sent else None,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
