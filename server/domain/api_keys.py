"""API keys: their format, generation and the hash under which they are stored."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets

# Keys look like "tm_live_" or "tm_test_" followed by at least 32 URL-safe characters.
API_KEY_PATTERN = re.compile(r"tm_(live|test)_[A-Za-z0-9_-]{32,200}")
# The visible part kept for support and logs: "tm_live_" plus four characters of the secret.
KEY_PREFIX_LENGTH = 12
_SECRET_BYTES = 32


class ApiKeyMode(enum.StrEnum):
    """Whether a key is used for live traffic or for tests; both work the same way."""

    LIVE = "live"
    TEST = "test"


def generate_api_key(mode: ApiKeyMode) -> str:
    """Return a new key with 256 random bits (43 URL-safe characters after the prefix)."""
    return f"tm_{mode.value}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def is_well_formed(api_key: str) -> bool:
    return API_KEY_PATTERN.fullmatch(api_key) is not None


def hash_api_key(api_key: str) -> str:
    """Return the SHA-256 hex digest under which a key is stored and looked up.

    A fast hash is enough because keys carry 256 random bits, which no dictionary or
    brute-force search can cover. The plain key is never stored.
    """
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_prefix(api_key: str) -> str:
    """Return the non-secret start of a key, safe to log and show."""
    return api_key[:KEY_PREFIX_LENGTH]
