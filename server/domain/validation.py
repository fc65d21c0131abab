"""Field rules shared by every request: text limits, URLs, UUIDs and idempotency keys."""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from urllib.parse import urlsplit

import idna

from server.domain.errors import FieldViolation, ValidationFailed

MAX_URL_LENGTH = 2048
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Maximum length of a rejected value that an error message repeats.
MAX_SHOWN_VALUE_LENGTH = 40
_CANONICAL_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# Control characters, surrogates, and unassigned code points or noncharacters such as U+FFFF.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Cn"})


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


def shown(value: str) -> str:
    """Return the value quoted for an error message, cut to 40 characters."""
    if len(value) <= MAX_SHOWN_VALUE_LENGTH:
        return repr(value)
    return repr(value[:MAX_SHOWN_VALUE_LENGTH]) + "..."


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(character) == "Cc" for character in value)


def has_forbidden_characters(value: str) -> bool:
    """Tell whether the text has control characters, surrogates or unassigned code points."""
    return any(unicodedata.category(character) in _FORBIDDEN_CATEGORIES for character in value)


def is_blank(value: str) -> bool:
    """Tell whether the text shows nothing: only spaces and invisible format characters such as U+200B."""
    return all(character.isspace() or unicodedata.category(character) == "Cf" for character in value)


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
    if len(value) > max_length:
        violations.add(field, f"must be at most {max_length} characters, got {len(value)}")
        return None
    if has_forbidden_characters(value):
        violations.add(field, "must not contain control characters, surrogates or unassigned code points")
        return None
    if is_blank(value):
        violations.add(field, "must not be blank")
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
    if has_forbidden_characters(value) or any(character.isspace() for character in value):
        violations.add(field, "must not contain spaces or control characters")
        return None
    if "\\" in value:
        # Browsers read a backslash as a slash, so "https://evil.example\\@shop.example/" leads
        # somewhere else than urllib's host.
        violations.add(field, "must not contain backslashes")
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
    if not _is_valid_host(parts.hostname):
        violations.add(field, f"must have a valid host name, got {shown(parts.hostname)}")
        return None
    return value


# Hosts repeat across requests (one shop, one gateway), and IDNA checks cost tens of microseconds.
@functools.lru_cache(maxsize=4096)
def _is_valid_host(host: str) -> bool:
    """Tell whether a URL host is an IP literal or a host name that IDNA 2008 (UTS 46) accepts."""
    if host.startswith("[") or ":" in host:
        return True  # urlsplit already rejected malformed IPv6 literals
    try:
        encoded = idna.encode(host.rstrip("."), uts46=True)
    except idna.IDNAError:
        return False
    return all(re.fullmatch(rb"[A-Za-z0-9-]{1,63}", label) for label in encoded.split(b"."))


def check_uuid(violations: Violations, field: str, value: str) -> uuid.UUID | None:
    """Parse a UUID in its canonical 8-4-4-4-12 hexadecimal form (any letter case)."""
    if not _CANONICAL_UUID.fullmatch(value):
        violations.add(field, "must be a UUID such as 3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f")
        return None
    return uuid.UUID(value)


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
