"""Contacts and the rules for their e-mail addresses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from server.domain.validation import Violations, check_uuid

MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """A validated e-mail address and the case-insensitive key that makes it unique."""

    address: str
    lookup_key: str


@dataclass(frozen=True, slots=True)
class Contact:
    """A person in a workspace."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ContactReference:
    """The contact a tracking request names: by id, by e-mail address, or by both."""

    contact_id: uuid.UUID | None
    email: EmailAddress | None


def check_email(violations: Violations, field: str, value: str, *, required: bool = False) -> EmailAddress | None:
    """Validate an e-mail address and return it with its lookup key.

    The domain is normalized by IDNA rules and the local part is kept as given. The
    lookup key is the whole address in lower case, because addresses are unique per
    workspace when compared case-insensitively.
    """
    if not value:
        if required:
            violations.add(field, "is required")
        return None
    if len(value) > MAX_EMAIL_LENGTH:
        violations.add(field, f"must be at most {MAX_EMAIL_LENGTH} characters, got {len(value)}")
        return None
    try:
        validated = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        violations.add(field, f"must be a valid e-mail address: {error}")
        return None
    return EmailAddress(address=validated.normalized, lookup_key=validated.normalized.lower())


def check_contact_reference(violations: Violations, email: str, contact_id: str) -> ContactReference | None:
    """Validate the `email` / `contact_id` pair of a tracking request; one is required."""
    if not email and not contact_id:
        violations.add("email", "is required when contact_id is empty")
        violations.add("contact_id", "is required when email is empty")
        return None
    parsed_email = check_email(violations, "email", email)
    parsed_id = check_uuid(violations, "contact_id", contact_id) if contact_id else None
    return ContactReference(contact_id=parsed_id, email=parsed_email)


def mask_email(address: str) -> str:
    """Return the address with most of the local part hidden, for log lines."""
    local, _, domain = address.rpartition("@")
    if not local:
        return "***"
    return f"{local[0]}***@{domain}"
