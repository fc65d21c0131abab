"""Tracking tokens, the signing keyring and destination normalization, without I/O."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import re
import string
import uuid
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import TrackingError
from server.domain.tracking_links import (
    MAX_DESTINATION_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    InvalidDestination,
    InvalidTrackingToken,
    SigningKeyring,
    TrackingClaims,
    TrackingKind,
    click_path,
    honeypot_path,
    normalize_destination,
    open_pixel_path,
    sign_tracking_token,
    verify_tracking_token,
)

OLD_SECRET = bytes(range(32))
NEW_SECRET = hashlib.sha256(b"new tracking key for tests").digest()
KEYRING = SigningKeyring({"2024-01": OLD_SECRET, "2025-01": NEW_SECRET}, active_key_id="2025-01")
WORKSPACE_ID = uuid.UUID("3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f")
CONTACT_ID = uuid.UUID("9a1c5e7f-2b3d-4e6a-8c0b-7d9f1e3a5c2b")
MESSAGE_ID = "msg-2025-06-summer-sale-0001"
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
RFC_3986_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")


def open_claims(message_id: str = MESSAGE_ID) -> TrackingClaims:
    return TrackingClaims(TrackingKind.OPEN, WORKSPACE_ID, message_id, CONTACT_ID)


def click_claims(url: str = "https://shop.example.com/rate?a=1&b=2#top") -> TrackingClaims:
    return TrackingClaims(TrackingKind.CLICK, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID, "3-a1b2c3d4", url)


def all_claims() -> list[TrackingClaims]:
    honeypot = TrackingClaims(TrackingKind.HONEYPOT, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID)
    return [open_claims(), click_claims(), honeypot]


def signed_raw_token(payload: bytes, key_id: str = "2025-01", secret: bytes = NEW_SECRET) -> str:
    """Sign hand-made payload bytes (version, key id and the rest) the way the module does."""
    data = payload + hmac.digest(secret, payload, hashlib.sha256)
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def payload_head(kind_code: int, key_id: str = "2025-01") -> bytes:
    key = key_id.encode("ascii")
    return bytes([1, len(key)]) + key + bytes([kind_code]) + WORKSPACE_ID.bytes + CONTACT_ID.bytes


def length_prefixed(field: bytes, size: int) -> bytes:
    return len(field).to_bytes(size, "big") + field


# A one-character message id and no campaign id.
IDS = length_prefixed(b"m", 2) + length_prefixed(b"", 2)
LINK = length_prefixed(b"1-a", 1)


# Tokens


@pytest.mark.parametrize("claims", all_claims(), ids=lambda claims: claims.kind.name)
def test_token_round_trip(claims: TrackingClaims) -> None:
    token = sign_tracking_token(claims, KEYRING)

    assert verify_tracking_token(token, KEYRING, expected_kind=claims.kind) == claims


@pytest.mark.parametrize("claims", all_claims(), ids=lambda claims: claims.kind.name)
def test_token_survives_url_reencoding(claims: TrackingClaims) -> None:
    token = sign_tracking_token(claims, KEYRING)

    assert UNRESERVED.fullmatch(token)
    assert quote(token, safe="") == token
    assert unquote(token) == token


def test_open_token_is_compact() -> None:
    token = sign_tracking_token(open_claims(), KEYRING)

    # 1 version + 1 + 7 key id + 1 kind + 32 UUIDs + 2 + 28 message id + 2 campaign id + 32 MAC = 106 bytes.
    assert len(token) == 142


@pytest.mark.parametrize("claims", all_claims(), ids=lambda claims: claims.kind.name)
def test_campaign_id_round_trip(claims: TrackingClaims) -> None:
    with_campaign = dataclasses.replace(claims, campaign_id="Sommer-Aktion 2025 ☀")
    token = sign_tracking_token(with_campaign, KEYRING)

    assert verify_tracking_token(token, KEYRING, expected_kind=claims.kind) == with_campaign


def test_signing_is_deterministic() -> None:
    assert sign_tracking_token(click_claims(), KEYRING) == sign_tracking_token(click_claims(), KEYRING)


def test_message_id_keeps_unicode() -> None:
    claims = open_claims("Bestellung-Übersicht-" + "é" * (MAX_MESSAGE_ID_LENGTH - 21))
    token = sign_tracking_token(claims, KEYRING)

    assert verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN) == claims


def test_token_of_old_key_verifies_after_rotation() -> None:
    before_rotation = SigningKeyring({"2024-01": OLD_SECRET}, active_key_id="2024-01")
    token = sign_tracking_token(open_claims(), before_rotation)

    assert verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN) == open_claims()


def test_rotation_signs_with_new_key() -> None:
    after_rotation = SigningKeyring({"2025-01": NEW_SECRET}, active_key_id="2025-01")
    token = sign_tracking_token(open_claims(), KEYRING)

    assert verify_tracking_token(token, after_rotation, expected_kind=TrackingKind.OPEN) == open_claims()


def test_token_of_removed_key_is_rejected() -> None:
    before_rotation = SigningKeyring({"2024-01": OLD_SECRET}, active_key_id="2024-01")
    after_removal = SigningKeyring({"2025-01": NEW_SECRET}, active_key_id="2025-01")
    token = sign_tracking_token(open_claims(), before_rotation)

    with pytest.raises(InvalidTrackingToken) as caught:
        verify_tracking_token(token, after_removal, expected_kind=TrackingKind.OPEN)

    assert "'2024-01' is not in the signing keyring" in str(caught.value)


def test_token_with_other_secret_is_rejected() -> None:
    impostor = SigningKeyring({"2025-01": b"\xff" * 32}, active_key_id="2025-01")
    token = sign_tracking_token(open_claims(), impostor)

    with pytest.raises(InvalidTrackingToken, match="signature does not match"):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN)


def test_token_of_other_kind_is_rejected() -> None:
    token = sign_tracking_token(open_claims(), KEYRING)

    with pytest.raises(InvalidTrackingToken, match="kind is OPEN, but CLICK is expected"):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.CLICK)


def test_every_truncation_is_rejected() -> None:
    token = sign_tracking_token(click_claims(), KEYRING)

    for length in range(len(token)):
        with pytest.raises(InvalidTrackingToken):
            verify_tracking_token(token[:length], KEYRING, expected_kind=TrackingKind.CLICK)


@given(st.data())
def test_changed_character_is_rejected(data: st.DataObject) -> None:
    token = sign_tracking_token(click_claims(), KEYRING)
    position = data.draw(st.integers(0, len(token) - 1))
    alphabet = string.ascii_letters + string.digits + "-_"
    replacement = data.draw(st.sampled_from(alphabet.replace(token[position], "")))
    tampered = token[:position] + replacement + token[position + 1 :]

    with pytest.raises(InvalidTrackingToken):
        verify_tracking_token(tampered, KEYRING, expected_kind=TrackingKind.CLICK)


def decode_unpadded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_unknown_version_is_rejected() -> None:
    data = bytearray(decode_unpadded(sign_tracking_token(open_claims(), KEYRING)))
    data[0] = 2
    token = base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")

    with pytest.raises(InvalidTrackingToken, match="version 2 is not supported"):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN)


def test_noncanonical_base64_is_rejected() -> None:
    token = sign_tracking_token(open_claims(), KEYRING)
    assert len(token) % 4 in (2, 3)  # so the last character carries 4 or 2 unused bits, all zero
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) + 1]
    assert decode_unpadded(twin) == decode_unpadded(token)

    with pytest.raises(InvalidTrackingToken, match="canonical"):
        verify_tracking_token(twin, KEYRING, expected_kind=TrackingKind.OPEN)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (payload_head(9) + IDS, "kind is unknown"),
        (payload_head(1) + IDS + b"\x00", "trailing bytes"),
        (payload_head(1) + length_prefixed(b"\xff\xfe", 2) + length_prefixed(b"", 2), "not valid utf-8"),
        (payload_head(1) + b"\x00\x05m", "payload is truncated"),
        (payload_head(1) + length_prefixed(b"", 2) + length_prefixed(b"", 2), "payload fields are invalid"),
        (payload_head(1) + length_prefixed(b"m", 2), "payload is truncated"),
        (payload_head(1) + length_prefixed(b"m", 2) + length_prefixed(b"\xc3", 2), "not valid utf-8"),
        (payload_head(1) + length_prefixed(b"m", 2) + length_prefixed(b"c" * 201, 2), "payload fields are invalid"),
        (payload_head(1) + IDS + LINK, "trailing bytes"),
        (payload_head(2) + IDS + LINK + length_prefixed(b"/a b", 2), "payload fields are invalid"),
        (payload_head(2) + IDS + LINK + length_prefixed(b"\xc3", 2), "not valid ascii"),
    ],
    ids=[
        "unknown kind",
        "trailing bytes",
        "invalid utf-8 message id",
        "short message id",
        "empty message id",
        "missing campaign id",
        "invalid utf-8 campaign id",
        "long campaign id",
        "open with link id",
        "invalid destination",
        "non-ascii destination",
    ],
)
def test_signed_malformed_payload_is_rejected(payload: bytes, reason: str) -> None:
    token = signed_raw_token(payload)

    with pytest.raises(InvalidTrackingToken, match=reason):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.CLICK)


def test_malformed_key_id_is_rejected() -> None:
    token = signed_raw_token(payload_head(1, key_id="bad key") + IDS, key_id="bad key")

    with pytest.raises(InvalidTrackingToken, match="key id is malformed"):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN)


@pytest.mark.parametrize(
    "token",
    ["", "=", "AQ==", "A", "AQ", "a.b", "ä", "AQJr MQ", "A" * 8193, "\x00", "%41%42", "AAAA" * 20],
)
def test_garbage_token_is_rejected(token: str) -> None:
    with pytest.raises(InvalidTrackingToken):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN)


@given(st.text() | st.text(alphabet=string.ascii_letters + string.digits + "-_"))
def test_any_string_raises_only_invalid_token(token: str) -> None:
    with contextlib.suppress(InvalidTrackingToken):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.CLICK)


@given(st.binary(max_size=600))
def test_any_payload_raises_only_invalid_token(payload: bytes) -> None:
    token = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    with contextlib.suppress(InvalidTrackingToken):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.CLICK)


@given(st.binary(max_size=300), st.sampled_from([1, 2, 3]))
def test_any_signed_payload_raises_only_invalid_token(body: bytes, kind_code: int) -> None:
    token = signed_raw_token(payload_head(kind_code) + body)
    with contextlib.suppress(InvalidTrackingToken):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.CLICK)


def test_invalid_token_is_a_tracking_error() -> None:
    assert issubclass(InvalidTrackingToken, TrackingError)
    assert issubclass(InvalidDestination, TrackingError)


def test_rejection_does_not_show_token_or_secret() -> None:
    token = sign_tracking_token(open_claims(), KEYRING)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BA")

    with pytest.raises(InvalidTrackingToken) as caught:
        verify_tracking_token(tampered, KEYRING, expected_kind=TrackingKind.OPEN)

    assert tampered not in str(caught.value)
    assert NEW_SECRET.hex() not in str(caught.value)
    assert MESSAGE_ID not in str(caught.value)


# Keyring


def test_keyring_repr_hides_secrets() -> None:
    keyring_repr = repr(KEYRING)

    assert keyring_repr == "SigningKeyring(active_key_id='2025-01', key_ids=['2024-01', '2025-01'])"
    assert repr(NEW_SECRET)[2:12] not in keyring_repr


def test_keyring_lists_key_ids() -> None:
    assert KEYRING.key_ids == ("2024-01", "2025-01")
    assert KEYRING.active_key_id == "2025-01"


def test_keyring_rejects_short_secret() -> None:
    secret = b"0123456789abcdef0123456789abcd"

    with pytest.raises(ValueError, match="is 30 bytes long, but at least 32") as caught:
        SigningKeyring({"k1": secret}, active_key_id="k1")

    assert "0123456789" not in str(caught.value)


def test_keyring_rejects_text_secret() -> None:
    with pytest.raises(TypeError, match="must be bytes, not str"):
        SigningKeyring({"k1": "x" * 40}, active_key_id="k1")  # type: ignore[dict-item]


def test_keyring_rejects_missing_active_key() -> None:
    with pytest.raises(ValueError, match="active key id 'k2' is not among the key ids"):
        SigningKeyring({"k1": NEW_SECRET}, active_key_id="k2")


@pytest.mark.parametrize("key_id", ["", "a b", "k" * 33, "ü", "a/b"])
def test_keyring_rejects_invalid_key_id(key_id: str) -> None:
    with pytest.raises(ValueError, match="is invalid"):
        SigningKeyring({key_id: NEW_SECRET}, active_key_id=key_id)


# Claims


def test_claims_reject_long_message_id() -> None:
    with pytest.raises(ValueError, match="1 to 200 characters, got 201"):
        open_claims("m" * 201)


def test_claims_reject_empty_message_id() -> None:
    with pytest.raises(ValueError, match="got 0"):
        open_claims("")


@pytest.mark.parametrize(("campaign_id", "reason"), [("", "got 0"), ("c" * 201, "got 201"), ("c\udfff", "surrogate")])
def test_claims_reject_invalid_campaign_id(campaign_id: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"campaign id .*{reason}"):
        TrackingClaims(TrackingKind.OPEN, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID, campaign_id=campaign_id)


def test_claims_reject_surrogate_message_id() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        open_claims("m\ud800")


def test_open_claims_reject_destination() -> None:
    with pytest.raises(ValueError, match="OPEN token carries no link id"):
        TrackingClaims(TrackingKind.OPEN, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID, None, "https://x.example/")


def test_click_claims_need_destination() -> None:
    with pytest.raises(ValueError, match="needs a destination"):
        TrackingClaims(TrackingKind.CLICK, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID, "1-a", None)


@pytest.mark.parametrize("link_id", [None, "", "a b", "x" * 33, "ä"])
def test_click_claims_reject_invalid_link_id(link_id: str | None) -> None:
    with pytest.raises(ValueError, match="link id"):
        TrackingClaims(TrackingKind.CLICK, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID, link_id, "https://x.example/")


def test_click_claims_reject_unnormalized_destination() -> None:
    with pytest.raises(InvalidDestination, match="not normalized"):
        click_claims("https://shop.example.com/Übersicht.pdf")


# Gateway paths


def test_gateway_paths() -> None:
    assert open_pixel_path("AQJr_-9") == "/o/AQJr_-9.gif"
    assert click_path("AQJr_-9") == "/c/AQJr_-9"
    assert honeypot_path("AQJr_-9") == "/h/AQJr_-9"


@pytest.mark.parametrize("token", ["", "../x", "a/b", "a.gif", "a?b"])
def test_gateway_paths_reject_non_tokens(token: str) -> None:
    for build_path in (open_pixel_path, click_path, honeypot_path):
        with pytest.raises(ValueError, match="base64url"):
            build_path(token)


# Destination normalization


def test_brackets_in_query_are_kept() -> None:
    url = "https://shop.example.com/search?fulltext=campus&f[0]=themes:2&f[1]=themes:1706"

    location = normalize_destination(url)

    assert location == url
    assert parse_qsl(urlsplit(unquote(location)).query) == parse_qsl(urlsplit(unquote(url)).query)
    assert parse_qsl(urlsplit(unquote(location)).query) == [
        ("fulltext", "campus"),
        ("f[0]", "themes:2"),
        ("f[1]", "themes:1706"),
    ]


def test_non_ascii_path_is_percent_encoded() -> None:
    assert normalize_destination("https://shop.example.com/Übersicht.pdf") == (
        "https://shop.example.com/%C3%9Cbersicht.pdf"
    )


def test_existing_escapes_are_kept() -> None:
    assert normalize_destination("https://shop.example.com/a%2Fb?x=%26y") == "https://shop.example.com/a%2Fb?x=%26y"


def test_lowercase_escapes_are_kept() -> None:
    assert normalize_destination("https://shop.example.com/a%2fb%c3%bc") == "https://shop.example.com/a%2fb%c3%bc"


def test_non_ascii_host_is_punycode() -> None:
    assert normalize_destination("https://bücher.example/Straße?q=ü") == (
        "https://xn--bcher-kva.example/Stra%C3%9Fe?q=%C3%BC"
    )


def test_non_ascii_host_keeps_port_and_trailing_dot() -> None:
    assert normalize_destination("http://BÜCHER.example.:8080/") == "http://xn--bcher-kva.example.:8080/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://x.example/a b", "https://x.example/a%20b"),
        ('https://x.example/"<>\\^`{|}', "https://x.example/%22%3C%3E%5C%5E%60%7B%7C%7D"),
        ("https://x.example/100%", "https://x.example/100%25"),
        ("https://x.example/%zz%4", "https://x.example/%25zz%254"),
        ("https://x.example/#Ä", "https://x.example/#%C3%84"),
        ("https://x.example/p#a#b", "https://x.example/p#a#b"),
        ("https://x.example/\U0001f600", "https://x.example/%F0%9F%98%80"),
        ("https://x.example/\u00a0", "https://x.example/%C2%A0"),
        ("https://x.example/a\u3000b", "https://x.example/a%E3%80%80b"),
    ],
)
def test_illegal_characters_are_percent_encoded(url: str, expected: str) -> None:
    assert normalize_destination(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "HTTPS://Shop.Example.COM/Path?Q=1",
        "http://x.example",
        "https://x.example:8443/",
        "https://x.example:/",
        "https://127.0.0.1/a",
        "https://[2001:db8::1]:8080/a",
        "https://x.example/a;b=c/d!$'()*+,@:?&=/?#~",
        "https://x.example/?redirect=https%3A%2F%2Fother.example%2F",
    ],
)
def test_valid_uri_is_unchanged(url: str) -> None:
    assert normalize_destination(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("mailto:shop@example.com", "scheme 'mailto' is not allowed"),
        ("ftp://x.example/file", "scheme 'ftp' is not allowed"),
        ("data:text/html,hi", "scheme 'data' is not allowed"),
        ("/relative/path", "not an absolute URL"),
        ("//x.example/path", "not an absolute URL"),
        ("x.example/path", "not an absolute URL"),
        ("https:x.example", "host is missing"),
        ("https:/x.example", "host is missing"),
        ("https://", "host is empty"),
        ("https:///path", "host is empty"),
        ("https://?q=1", "host is empty"),
        ("https://x.example/a\nb", "control character"),
        ("https://x.example/a\x00", "control character"),
        ("https://x.example/\x85", "control character"),
        ("https://x.example/\x7f", "control character"),
        (" https://x.example/", "spaces"),
        ("https://x.example/ ", "spaces"),
        ("https://x.example/\t", "control character"),
        ("https://user:secret@x.example/", "user information"),
        ("https://x.example\\@y.example/", "user information"),
        ("https://x.example\\y/", "not allowed in a host name"),
        ("https://x.example:99999/", "port '99999'"),
        ("https://x.example:8o/", "port '8o'"),
        ("https://x.example:" + "1" * 5000, "is not a number from 0 to 65535"),
        ("https://[2001:db8::1/", "no closing ']'"),
        ("https://[2001:db8::1]x/", "follow the IPv6 host"),
        ("https://[not-ipv6]/", "not a valid IPv6 address"),
        ("https://[fe80::1%25eth0]/", "zone ids are not supported"),
        ("https://bü..example/", "IDNA"),
        ("https://-bü.example/", "IDNA"),
        ("https://x.exa%6Dple/", "not allowed in a host name"),
        ("https://x.example/\ud800", "lone surrogate"),
        ("https://x.example/" + "a" * MAX_DESTINATION_LENGTH, "longer than 2048"),
    ],
)
def test_invalid_destination_is_rejected(url: str, reason: str) -> None:
    with pytest.raises(InvalidDestination) as caught:
        normalize_destination(url)

    assert reason in caught.value.reason
    assert caught.value.url == url


def test_destination_error_hides_query() -> None:
    with pytest.raises(InvalidDestination) as caught:
        normalize_destination("https://x.example:0x1/unsubscribe?email=ann@example.com#frag")

    assert str(caught.value) == (
        "link destination 'https://x.example:0x1/unsubscribe' cannot be tracked:"
        " port '0x1' is not a number from 0 to 65535"
    )


def test_longest_destination_is_accepted() -> None:
    url = "https://x.example/" + "a" * (MAX_DESTINATION_LENGTH - len("https://x.example/"))

    assert normalize_destination(url) == url


urls = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}{rest}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.sampled_from(["shop.example.com", "bücher.example", "127.0.0.1", "[::1]", "x.example:8080"]),
    st.text(max_size=60).map(lambda text: "/" + text.strip()),
)


@given(urls)
def test_normalization_is_idempotent(url: str) -> None:
    try:
        normalized = normalize_destination(url)
    except InvalidDestination:
        return

    assert normalize_destination(normalized) == normalized
    assert set(normalized) <= RFC_3986_CHARACTERS


@given(urls.filter(lambda url: "%" not in url and "bücher" not in url))
def test_unquoting_restores_the_iri(url: str) -> None:
    try:
        normalized = normalize_destination(url)
    except InvalidDestination:
        return

    assert unquote(normalized) == url


@given(st.text().map(lambda text: "https://" + text) | st.text())
def test_any_string_raises_only_invalid_destination(url: str) -> None:
    with contextlib.suppress(InvalidDestination):
        normalize_destination(url)
