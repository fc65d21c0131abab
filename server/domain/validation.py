"""Field rules shared by every request: text limits, URLs, UUIDs and idempotency keys."""

from __future__ import annotations

import unicodedata
import uuid
from urllib.parse import urlsplit

from server.domain.errors import FieldViolation, ValidationFailed

MAX_URL_LENGTH = 2048
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class Violations:
    """Collects every field violation of one request so that all are reported at once."""

    def __init__(self) -> None:
        self._violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._violations.append(FieldViolation(field, description))

    def __bool__(self) -> bool:
        return bool(self._violations)

    def raise_if_any(self) -> None:
        if self._violations:
            raise ValidationFailed(self._violations)


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(character) == "Cc" for character in value)


def check_text(
    violations: Violations, field: str, value: str, *, max_length: int, required: bool = False
) -> str | None:
    """Check a text field and return it, or None when it is optional and empty.

    Lengths count Unicode code points. Values are never trimmed or changed.
    """
    if not value:
        if required:
            violations.add(field, "is required")
        return None
    if required and not value.strip():
        violations.add(field, "must not be blank")
        return None
    if len(value) > max_length:
        violations.add(field, f"must be at most {max_length} characters, got {len(value)}")
        return None
    if has_control_characters(value):
        violations.add(field, "must not contain control characters")
        return None
    return value


def check_http_url(violations: Violations, field: str, value: str, *, required: bool = False) -> str | None:
    """Check that a value is an absolute http or https URL with a host, and return it."""
    if not value:
        if required:
            violations.add(field, "is required")
        return None
    if len(value) > MAX_URL_LENGTH:
        violations.add(field, f"must be at most {MAX_URL_LENGTH} characters, got {len(value)}")
        return None
    if has_control_characters(value) or any(character.isspace() for character in value):
        violations.add(field, "must not contain spaces or control characters")
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        violations.add(field, "must be an absolute http or https URL")
        return None
    if parts.scheme.lower() not in ("http", "https"):
        violations.add(field, "must be an absolute http or https URL")
        return None
    if not parts.hostname:
        violations.add(field, "must be an absolute http or https URL with a host")
        return None
    return value


def check_uuid(violations: Violations, field: str, value: str) -> uuid.UUID | None:
    """Parse a UUID in its canonical 36-character text form (any letter case)."""
    if len(value) != 36:
        violations.add(field, "must be a UUID such as 3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        violations.add(field, "must be a UUID such as 3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f")
        return None


def check_idempotency_key(violations: Violations, field: str, value: str) -> str | None:
    """Check an optional idempotency key: 1 to 255 printable ASCII characters."""
    if not value:
        return None
    if len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        violations.add(field, f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(value)}")
        return None
    if not all(" " < character <= "~" for character in value):
        violations.add(field, "must contain only printable ASCII characters without spaces")
        return None
    return value
