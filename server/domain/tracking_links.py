"""Signed tracking tokens for opens, clicks and honeypot hits, and the link destinations they carry."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import re
import string
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import idna

from server.domain.errors import TrackingError
from server.domain.validation import MAX_URL_LENGTH

MAX_MESSAGE_ID_LENGTH = 200
"""Maximum length of the message id in a token, in characters."""

MAX_CAMPAIGN_ID_LENGTH = 200
"""Maximum length of the optional campaign id in a token, in characters."""

MAX_DESTINATION_LENGTH = MAX_URL_LENGTH
"""Maximum length of a click destination, in characters of the normalized URI, equal to the maximum link_url of an e-mail event."""

MIN_SECRET_LENGTH = 32
"""Minimum length of a signing secret, in bytes, equal to the output size of SHA-256."""

_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,32}")
_LINK_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class InvalidTrackingToken(TrackingError):
    """A token that is malformed, altered, of another kind, or signed with a key no longer in the ring.

    The message gives the reason but never the token, a secret or the payload.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid tracking token: {reason}")
        self.reason = reason


class InvalidDestination(TrackingError):
    """A link destination that cannot be tracked, such as a relative URL, another scheme or a malformed host.

    The message shows the URL without query and fragment, because personal data such as e-mail
    addresses usually sits there. The `url` attribute keeps the whole URL.
    """

    def __init__(self, url: str, reason: str) -> None:
        url_without_query = url.partition("?")[0].partition("#")[0]
        if len(url_without_query) > 100:
            url_without_query = url_without_query[:100] + "..."
        super().__init__(f"link destination {url_without_query!r} cannot be tracked: {reason}")
        self.url = url
        self.reason = reason


class TrackingKind(enum.Enum):
    """The event a tracking token records when the gateway receives it."""

    OPEN = "open"
    CLICK = "click"
    HONEYPOT = "honeypot"


class SigningKeyring:
    """HMAC-SHA256 secrets by key id, with one active key that signs new tokens.

    Verification accepts a token signed with any key in the ring, so a rotation adds the new key,
    makes it active, and removes the old key once its tokens no longer need to work. The secrets
    never appear in `repr()` or in error messages.
    """

    __slots__ = ("_active_key_id", "_secrets")

    def __init__(self, secrets: Mapping[str, bytes], active_key_id: str) -> None:
        for key_id, secret in secrets.items():
            if not _KEY_ID_PATTERN.fullmatch(key_id):
                raise ValueError(
                    f"key id {key_id!r} is invalid: use 1 to 32 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
                )
            if not isinstance(secret, bytes):
                raise TypeError(f"secret for key id {key_id!r} must be bytes, not {type(secret).__name__}")
            if len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"secret for key id {key_id!r} is {len(secret)} bytes long,"
                    f" but at least {MIN_SECRET_LENGTH} random bytes are required"
                )
        if active_key_id not in secrets:
            raise ValueError(f"active key id {active_key_id!r} is not among the key ids {sorted(secrets)}")
        self._secrets = dict(secrets)
        self._active_key_id = active_key_id

    @property
    def active_key_id(self) -> str:
        """Key id that signs new tokens."""
        return self._active_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Sorted ids of every key that verification accepts."""
        return tuple(sorted(self._secrets))

    def __repr__(self) -> str:
        return f"SigningKeyring(active_key_id={self._active_key_id!r}, key_ids={list(self.key_ids)!r})"

    def _mac(self, key_id: str, message: bytes) -> bytes | None:
        """Compute the HMAC-SHA256 of the message, or return None when the key id is not in the ring."""
        secret = self._secrets.get(key_id)
        if secret is None:
            return None
        return hmac.digest(secret, message, hashlib.sha256)


@dataclass(frozen=True, slots=True)
class TrackingClaims:
    """The signed content of a tracking token: who received which message, and for a click, where it leads.

    `link_id` and `destination` are set for clicks and only for clicks. `destination` must already
    be the output of `normalize_destination`, so the signed URL is the one the redirect sends.
    `campaign_id` is optional for every kind.
    """

    kind: TrackingKind
    workspace_id: uuid.UUID
    message_id: str
    contact_id: uuid.UUID
    link_id: str | None = None
    destination: str | None = None
    campaign_id: str | None = None

    def __post_init__(self) -> None:
        _check_text_field("message id", self.message_id, MAX_MESSAGE_ID_LENGTH)
        if self.campaign_id is not None:
            _check_text_field("campaign id", self.campaign_id, MAX_CAMPAIGN_ID_LENGTH)

        if self.kind is not TrackingKind.CLICK:
            if self.link_id is not None or self.destination is not None:
                raise ValueError(f"a {self.kind.name} token carries no link id and no destination")
            return

        if self.link_id is None or not _LINK_ID_PATTERN.fullmatch(self.link_id):
            raise ValueError(
                f"link id {self.link_id!r} is invalid: use 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'"
            )
        if self.destination is None:
            raise ValueError("a CLICK token needs a destination")
        if normalize_destination(self.destination) != self.destination:
            raise InvalidDestination(
                self.destination, "it is not normalized, so pass it through normalize_destination first"
            )


def _check_text_field(name: str, value: str, max_length: int) -> None:
    if not 1 <= len(value) <= max_length:
        raise ValueError(f"{name} must have 1 to {max_length} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} contains a lone surrogate and cannot be encoded as UTF-8") from error


def open_pixel_path(token: str) -> str:
    """Return the gateway path of the open pixel for a token, relative to the gateway's base URL."""
    return f"/o/{_checked_token(token)}.gif"


def click_path(token: str) -> str:
    """Return the gateway path that records a click and redirects to the token's destination."""
    return f"/c/{_checked_token(token)}"


def honeypot_path(token: str) -> str:
    """Return the gateway path of the hidden link that only automated clients follow."""
    return f"/h/{_checked_token(token)}"


def _checked_token(token: str) -> str:
    if not _TOKEN_PATTERN.fullmatch(token):
        raise ValueError("token must be a non-empty base64url string without padding, as sign_tracking_token returns")
    return token


# Token layout, version 1. The bytes below are encoded as base64url without padding, so a token
# contains only A-Z, a-z, 0-9, '-' and '_', which URL re-encoding by mail clients leaves alone.
#
#   1 byte    version, 0x01
#   1 byte    key id length K, 1 to 32
#   K bytes   key id, ASCII
#   1 byte    kind: 0x01 open, 0x02 click, 0x03 honeypot
#   16 bytes  workspace id, UUID in network byte order
#   16 bytes  contact id, UUID in network byte order
#   2 bytes   message id length M, big-endian
#   M bytes   message id, UTF-8
#   2 bytes   campaign id length C, big-endian, 0 when the token has no campaign id
#   C bytes   campaign id, UTF-8
#   clicks only:
#   1 byte    link id length L, 1 to 32
#   L bytes   link id, ASCII
#   2 bytes   destination length D, big-endian
#   D bytes   destination, ASCII (a normalized URI)
#   32 bytes  HMAC-SHA256 under the key id's secret, over every byte before it
#
# The version and key id come first so that verification can pick the secret before it parses
# anything else, and it parses the rest only after the MAC matched.

_TOKEN_VERSION = 1
_MAC_LENGTH = 32
_KIND_CODES = {TrackingKind.OPEN: 1, TrackingKind.CLICK: 2, TrackingKind.HONEYPOT: 3}
_KINDS_BY_CODE = {code: kind for kind, code in _KIND_CODES.items()}
# Above the longest valid token (about 5,000 characters), so longer input is rejected unread.
_MAX_TOKEN_LENGTH = 8192


def sign_tracking_token(claims: TrackingClaims, keyring: SigningKeyring) -> str:
    """Encode the claims and sign them with the keyring's active key.

    Signing is deterministic: the same claims and key give the same token.
    """
    key_id = keyring.active_key_id.encode("ascii")
    payload = bytearray([_TOKEN_VERSION, len(key_id)])
    payload += key_id
    payload.append(_KIND_CODES[claims.kind])
    payload += claims.workspace_id.bytes
    payload += claims.contact_id.bytes
    _append_with_length(payload, claims.message_id.encode("utf-8"), 2)
    _append_with_length(payload, (claims.campaign_id or "").encode("utf-8"), 2)
    if claims.kind is TrackingKind.CLICK:
        # TrackingClaims enforces both fields for clicks.
        assert claims.link_id is not None
        assert claims.destination is not None
        _append_with_length(payload, claims.link_id.encode("ascii"), 1)
        _append_with_length(payload, claims.destination.encode("ascii"), 2)

    mac = keyring._mac(keyring.active_key_id, bytes(payload))
    assert mac is not None  # the active key is always in the ring
    payload += mac
    return base64.urlsafe_b64encode(bytes(payload)).rstrip(b"=").decode("ascii")


def _append_with_length(payload: bytearray, field: bytes, length_size: int) -> None:
    payload += len(field).to_bytes(length_size, "big")
    payload += field


def verify_tracking_token(token: str, keyring: SigningKeyring, *, expected_kind: TrackingKind) -> TrackingClaims:
    """Check a token's signature and return its claims.

    Raises InvalidTrackingToken, and nothing else for any string, when the token is not base64url,
    is truncated or altered, or has an unknown version. It also raises it when the key id is not in
    the ring, and when the token's kind is not `expected_kind`, such as an open token sent to the
    click path.
    """
    data = _decode_base64url(token)
    if len(data) < 3 + _MAC_LENGTH:
        raise InvalidTrackingToken("it is truncated")
    if data[0] != _TOKEN_VERSION:
        raise InvalidTrackingToken(f"version {data[0]} is not supported")

    key_id_end = 2 + data[1]
    key_id = data[2:key_id_end].decode("ascii", errors="replace")
    signed, mac = data[:-_MAC_LENGTH], data[-_MAC_LENGTH:]
    if key_id_end > len(signed) or not _KEY_ID_PATTERN.fullmatch(key_id):
        raise InvalidTrackingToken("its key id is malformed")
    expected_mac = keyring._mac(key_id, signed)
    if expected_mac is None:
        raise InvalidTrackingToken(f"key id {key_id!r} is not in the signing keyring")
    if not hmac.compare_digest(mac, expected_mac):
        raise InvalidTrackingToken("its signature does not match")

    claims = _parse_claims(signed, key_id_end)
    if claims.kind is not expected_kind:
        raise InvalidTrackingToken(f"its kind is {claims.kind.name}, but {expected_kind.name} is expected here")
    return claims


def _decode_base64url(token: str) -> bytes:
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidTrackingToken("it is not a string of at most 8192 characters")
    if not _TOKEN_PATTERN.fullmatch(token) or len(token) % 4 == 1:
        raise InvalidTrackingToken("it is not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except binascii.Error as error:
        raise InvalidTrackingToken("it is not base64url without padding") from error
    # A last character with nonzero unused bits decodes to the same bytes as the canonical one.
    # Rejecting it gives each payload exactly one spelling.
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != token:
        raise InvalidTrackingToken("it is not in canonical base64url form")
    return data


def _parse_claims(signed: bytes, offset: int) -> TrackingClaims:
    reader = _PayloadReader(signed, offset)
    kind = _KINDS_BY_CODE.get(reader.take_int(1))
    if kind is None:
        raise InvalidTrackingToken("its kind is unknown")
    workspace_id = uuid.UUID(bytes=reader.take(16))
    contact_id = uuid.UUID(bytes=reader.take(16))
    message_id = reader.take_text(2, "utf-8")
    campaign_id = reader.take_text(2, "utf-8") or None
    link_id = None
    destination = None
    if kind is TrackingKind.CLICK:
        link_id = reader.take_text(1, "ascii")
        destination = reader.take_text(2, "ascii")
    if not reader.at_end():
        raise InvalidTrackingToken("it has trailing bytes")

    try:
        return TrackingClaims(kind, workspace_id, message_id, contact_id, link_id, destination, campaign_id)
    except (ValueError, InvalidDestination) as error:
        # Tokens signed by this module never get here, but one from another signer with the same key could.
        raise InvalidTrackingToken("its payload fields are invalid") from error


class _PayloadReader:
    """Sequential reads from a token payload that raise InvalidTrackingToken on overrun or bad text."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise InvalidTrackingToken("its payload is truncated")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def take_int(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def take_text(self, length_size: int, encoding: str) -> str:
        raw = self.take(self.take_int(length_size))
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as error:
            raise InvalidTrackingToken(f"a text field is not valid {encoding}") from error

    def at_end(self) -> bool:
        return self._offset == len(self._data)


# Characters that may appear somewhere in an RFC 3986 URI: unreserved, gen-delims and sub-delims.
# '%' is handled apart, because it is legal only as the start of a %XX escape.
_URI_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~" + ":/?#[]@" + "!$&'()*+,;=")
_HEX_DIGITS = frozenset(string.hexdigits)
_SCHEME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_REGISTERED_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


def normalize_destination(url: str) -> str:
    """Turn an absolute http or https URL or IRI into the URI that the click redirect sends.

    Non-ASCII characters become UTF-8 %XX escapes, and so do the ASCII characters that no URI may
    contain (space, '"', '<', '>', '\\', '^', '`', '{', '|', '}') and a '%' that starts no %XX
    escape. Everything else is kept byte for byte: existing escapes in their original case,
    query, fragment, brackets and the case of scheme and host. A non-ASCII host is encoded with
    IDNA 2008 and UTS 46 mapping (punycode). The function is idempotent.

    Raises InvalidDestination for relative URLs, schemes other than http and https, a missing or
    malformed host or port, user information (user:password@), control characters, surrounding
    spaces, and results longer than MAX_DESTINATION_LENGTH.

    NOTE: browsers read '\\' in an http path as '/', but this function sends it as %5C, so a
    server that does not decode %5C receives a different path.
    """
    if url.startswith(" ") or url.endswith(" "):
        raise InvalidDestination(url, "it has leading or trailing spaces")
    if any(unicodedata.category(character) == "Cc" for character in url):
        raise InvalidDestination(url, "it contains a control character")
    scheme_match = _SCHEME_PATTERN.match(url)
    if scheme_match is None:
        raise InvalidDestination(url, "it is not an absolute URL, which starts with http:// or https://")
    scheme = scheme_match.group()[:-1]
    if scheme.lower() not in ("http", "https"):
        raise InvalidDestination(
            url, f"scheme {scheme!r} is not allowed, because only http and https links are tracked"
        )
    rest = url[scheme_match.end() :]
    if not rest.startswith("//"):
        raise InvalidDestination(url, "the host is missing, because '//' does not follow the scheme")

    authority_end = len(rest)
    for delimiter in "/?#":
        position = rest.find(delimiter, 2)
        if position != -1:
            authority_end = min(authority_end, position)
    authority = _normalize_authority(url, rest[2:authority_end])
    tail = _percent_encode(url, rest[authority_end:])

    normalized = f"{scheme}://{authority}{tail}"
    if len(normalized) > MAX_DESTINATION_LENGTH:
        raise InvalidDestination(url, f"it is longer than {MAX_DESTINATION_LENGTH} characters once normalized")
    return normalized


def _normalize_authority(url: str, authority: str) -> str:
    if "@" in authority:
        raise InvalidDestination(url, "it contains user information (user:password@), which is not tracked")
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise InvalidDestination(url, "the IPv6 host has no closing ']'")
        host, after_host = authority[: close + 1], authority[close + 1 :]
        if after_host and not after_host.startswith(":"):
            raise InvalidDestination(url, "unexpected characters follow the IPv6 host")
        _check_ipv6_literal(url, host)
    else:
        host, colon, port = authority.partition(":")
        after_host = colon + port
        host = _encode_host(url, host)

    port = after_host[1:]
    if port and not (len(port) <= 5 and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise InvalidDestination(url, f"port {port!r} is not a number from 0 to 65535")
    return host + after_host


def _check_ipv6_literal(url: str, host: str) -> None:
    address = host[1:-1]
    try:
        ipaddress.IPv6Address(address)
    except ValueError as error:
        raise InvalidDestination(url, f"host {host!r} is not a valid IPv6 address") from error
    if "%" in address:
        raise InvalidDestination(url, "IPv6 zone ids are not supported")


def _encode_host(url: str, host: str) -> str:
    if not host:
        raise InvalidDestination(url, "the host is empty")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise InvalidDestination(url, f"host cannot be encoded with IDNA: {error}") from error
    if not _REGISTERED_NAME_PATTERN.fullmatch(host):
        raise InvalidDestination(url, f"host {host!r} contains characters not allowed in a host name")
    return host


def _percent_encode(url: str, text: str) -> str:
    pieces: list[str] = []
    index = 0
    while index < len(text):
        character = text[index]
        if character == "%" and index + 3 <= len(text) and set(text[index + 1 : index + 3]) <= _HEX_DIGITS:
            pieces.append(text[index : index + 3])
            index += 3
            continue
        if character in _URI_CHARACTERS:
            pieces.append(character)
        else:
            try:
                encoded = character.encode("utf-8")
            except UnicodeEncodeError as error:
                raise InvalidDestination(url, "it contains a lone surrogate character") from error
            pieces.append("".join(f"%{byte:02X}" for byte in encoded))
        index += 1
    return "".join(pieces)
