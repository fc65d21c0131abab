"""Parsing of the tracking-link settings shared by the gRPC server and the HTTP gateway."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import uuid

from server.domain.errors import GatewaySecretInvalid, LinkSigningNotConfigured
from server.domain.tracking_links import SigningKeyring

MIN_GATEWAY_SECRET_LENGTH = 32
# The caller id that RecordTrackingHits runs under: hits name their workspaces in their tokens.
GATEWAY_CALLER = uuid.UUID(int=0)


def parse_signing_keys(text: str) -> SigningKeyring | None:
    """Parse `KEY_ID:SECRET[,KEY_ID:SECRET...]`; the first key signs. Return None for an empty text.

    Raises ValueError naming the malformed entry, never its secret.
    """
    if not text.strip():
        return None
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(text.split(","), start=1):
        key_id, separator, encoded = entry.strip().partition(":")
        if not separator or not key_id:
            raise ValueError(f"link signing key {position} must look like KEY_ID:SECRET")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(f"link signing key {key_id!r}: the secret is not base64url") from None
        if key_id in keys:
            raise ValueError(f"link signing key {key_id!r} appears twice")
        keys[key_id] = secret
    first_key_id = text.split(",")[0].strip().partition(":")[0]
    return SigningKeyring(keys, active_key_id=first_key_id)


def generate_signing_key(key_id: str) -> str:
    """Return a new `KEY_ID:SECRET` entry with 32 random bytes."""
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip('=')}"


class GatewayAuthenticator:
    """Checks the gateway secret of RecordTrackingHits calls in constant time."""

    def __init__(self, gateway_secret: str) -> None:
        if gateway_secret and len(gateway_secret) < MIN_GATEWAY_SECRET_LENGTH:
            raise ValueError(f"the gateway secret must have at least {MIN_GATEWAY_SECRET_LENGTH} characters")
        self._secret = gateway_secret.encode()

    def authenticate(self, token: str | None) -> uuid.UUID:
        if not self._secret:
            raise LinkSigningNotConfigured("--gateway-secret")
        if token is None or not hmac.compare_digest(token.encode(), self._secret):
            raise GatewaySecretInvalid()
        return GATEWAY_CALLER
