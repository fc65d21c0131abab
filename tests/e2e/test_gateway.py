"""The HTTP gateway through real HTTP requests, with a real gRPC server and database behind it."""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from sqlalchemy import Engine

from server.domain.tracking_links import SigningKeyring, TrackingClaims, TrackingKind, click_path, sign_tracking_token
from server.entrypoints.gateway.app import PIXEL_GIF
from server.entrypoints.link_settings import parse_signing_keys
from server.entrypoints.settings import Settings
from tests.conftest import CURRENT_LINK_KEY, GATEWAY_SECRET, LINK_SIGNING_KEYS, PREVIOUS_LINK_KEY
from tests.e2e.test_track_product_view import create_contact
from tests.support import ApiCaller, RunningGateway, RunningServer, create_workspace_key
from topmail.tracking.v1 import email_event_pb2, tracking_service_pb2

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
EXAMPLE_BODY = {
    "email": "shopper@example.com",
    "product_id": "prod_abc123",
    "product_name": "Premium Wireless Headphones",
    "product_url": "https://shop.example.com/products/wireless-headphones",
    "image_url": "https://shop.example.com/images/headphones.jpg",
    "price": 99.99,
    "currency": "USD",
    "category": "Electronics",
    "brand": "AudioCo",
    "sku": "WH-PRO-BLK",
}


def gateway_settings(grpc_address: str, spool_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "grpc_target": grpc_address,
        "link_signing_keys": LINK_SIGNING_KEYS,
        "gateway_secret": GATEWAY_SECRET,
        "spool_path": str(spool_path),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def gateway(grpc_server: RunningServer, tmp_path: Path) -> Iterator[RunningGateway]:
    running = RunningGateway(gateway_settings(grpc_server.address, tmp_path / "spool.sqlite3"))
    yield running
    running.stop()


def instrument(api: ApiCaller, html: str, message_id: str = "msg-1", email: str = "shopper@example.com") -> Any:
    request = tracking_service_pb2.InstrumentEmailRequest(
        email=email, message_id=message_id, campaign_id="spring", html=html
    )
    return api.tracking.InstrumentEmail(request, metadata=api.metadata, timeout=10)


def tracking_paths(html: str, prefix: str) -> list[str]:
    return re.findall(rf"https://t\.example\.com(/{prefix}/[A-Za-z0-9_-]+(?:\.gif)?)", html)


def wait_for_events(api: ApiCaller, message_id: str, count: int, timeout: float = 10.0) -> list[Any]:
    """Return the message's events once `count` of them are stored; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    events: list[Any] = []
    while time.monotonic() < deadline:
        request = tracking_service_pb2.ListEmailEventsRequest(message_id=message_id, page_size=500)
        events = list(api.tracking.ListEmailEvents(request, metadata=api.metadata, timeout=10).email_events)
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"{len(events)} of {count} events stored after {timeout} s")


def post_json(gateway: RunningGateway, body: object, api_key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if api_key is not None:
        headers["authorization"] = f"Bearer {api_key}"
    status, _, payload = gateway.request(
        "POST", "/api/v1/track/product-view", headers=headers, body=json.dumps(body).encode()
    )
    return status, json.loads(payload)


def test_json_product_view_is_stored(gateway: RunningGateway, api: ApiCaller) -> None:
    contact_id = create_contact(api)

    status, document = post_json(gateway, EXAMPLE_BODY, api.api_key)

    assert status == 200
    data = document["data"]
    assert uuid.UUID(data["id"])
    assert data["contact_id"] == contact_id
    assert data["product_id"] == "prod_abc123"
    assert data["product_name"] == "Premium Wireless Headphones"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["viewed_at"])


def test_json_price_stays_exact(gateway: RunningGateway, api: ApiCaller, database_engine: Engine) -> None:
    from decimal import Decimal

    from sqlalchemy import select

    from server.adapters.database.schema import ProductViewRow

    create_contact(api)

    status, document = post_json(gateway, {**EXAMPLE_BODY, "price": 0.1, "currency": "eur"}, api.api_key)

    with database_engine.connect() as connection:
        row = connection.execute(
            select(ProductViewRow).where(ProductViewRow.id == uuid.UUID(document["data"]["id"]))
        ).one()
    assert status == 200
    assert row.price_amount == Decimal("0.1")
    assert row.currency_code == "EUR"


def test_json_unknown_contact_is_404(gateway: RunningGateway, api: ApiCaller) -> None:
    status, document = post_json(gateway, EXAMPLE_BODY, api.api_key)

    assert status == 404
    assert document["error"]["code"] == "CONTACT_NOT_FOUND"


@pytest.mark.parametrize("api_key", [None, "tm_live_" + "x" * 43, "nonsense"])
def test_json_bad_key_is_401(gateway: RunningGateway, api_key: str | None) -> None:
    status, document = post_json(gateway, EXAMPLE_BODY, api_key)

    assert status == 401
    assert document["error"]["code"] in ("API_KEY_MISSING", "API_KEY_INVALID")


def test_json_invalid_fields_are_422(gateway: RunningGateway, api: ApiCaller) -> None:
    create_contact(api)
    body = {**EXAMPLE_BODY, "product_url": "javascript:alert(1)", "price": -0.01, "currency": "XYZ", "sku": "x" * 101}

    status, document = post_json(gateway, body, api.api_key)

    assert status == 422
    assert document["error"]["code"] == "VALIDATION_FAILED"
    assert sorted(field["field"] for field in document["error"]["fields"]) == [
        "currency",
        "price",
        "product_url",
        "sku",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**EXAMPLE_BODY, "price": "99.99"}, "price"),
        ({**EXAMPLE_BODY, "price": True}, "price"),
        ({**EXAMPLE_BODY, "product_id": 42}, "product_id"),
        ({**EXAMPLE_BODY, "colour": "black"}, "colour"),
        ({**EXAMPLE_BODY, "price": 1.0000000001}, "price"),
    ],
)
def test_json_wrong_types_are_422(gateway: RunningGateway, api: ApiCaller, body: dict[str, Any], field: str) -> None:
    status, document = post_json(gateway, body, api.api_key)

    assert status == 422
    assert [entry["field"] for entry in document["error"]["fields"]] == [field]


def test_json_malformed_body_is_400(gateway: RunningGateway, api: ApiCaller) -> None:
    status, _, payload = gateway.request(
        "POST", "/api/v1/track/product-view", headers={"authorization": f"Bearer {api.api_key}"}, body=b"{not json"
    )

    assert status == 400
    assert json.loads(payload)["error"]["code"] == "INVALID_JSON"


def test_json_large_body_is_413(gateway: RunningGateway, api: ApiCaller) -> None:
    status, _, payload = gateway.request(
        "POST", "/api/v1/track/product-view", headers={"authorization": f"Bearer {api.api_key}"}, body=b" " * 70_000
    )

    assert status == 413
    assert json.loads(payload)["error"]["code"] == "REQUEST_TOO_LARGE"


def test_instrumented_email_records_every_hit(gateway: RunningGateway, api: ApiCaller) -> None:
    create_contact(api)
    html = '<html><body><a href="https://shop.example.com/sale">Sale</a></body></html>'
    response = instrument(api, html)
    click = tracking_paths(response.html, "c")[0]
    pixel = tracking_paths(response.html, "o")[0]
    honeypot = tracking_paths(response.html, "h")[0]

    pixel_status, pixel_headers, pixel_body = gateway.request("GET", pixel, headers={"user-agent": CHROME})
    click_status, click_headers, _ = gateway.request("GET", click, headers={"user-agent": CHROME})
    honeypot_status, _, _ = gateway.request("GET", honeypot, headers={"user-agent": CHROME})
    events = wait_for_events(api, "msg-1", 3)

    assert pixel_status == 200
    assert pixel_body == PIXEL_GIF
    assert len(pixel_body) == 43
    assert pixel_headers["cache-control"] == "no-store, no-cache, must-revalidate, private"
    assert click_status == 302
    assert click_headers["location"] == "https://shop.example.com/sale"
    assert honeypot_status == 200
    by_kind = {(event.event_type, event.honeypot_link): event for event in events}
    opened = by_kind[(email_event_pb2.EMAIL_EVENT_TYPE_OPENED, False)]
    clicked = by_kind[(email_event_pb2.EMAIL_EVENT_TYPE_CLICKED, False)]
    trap = by_kind[(email_event_pb2.EMAIL_EVENT_TYPE_CLICKED, True)]
    assert not opened.is_bot
    assert not clicked.is_bot
    assert clicked.link_url == "https://shop.example.com/sale"
    assert clicked.campaign_id == "spring"
    assert clicked.client_ip == "127.0.0.1"
    assert trap.is_bot
    assert trap.bot_type == email_event_pb2.BOT_TYPE_HONEYPOT


@pytest.mark.parametrize(
    ("href", "location"),
    [
        (
            "https://shop.example.com/rate?dcID=51778&amp;hash=12323&amp;rate=Good",
            "https://shop.example.com/rate?dcID=51778&hash=12323&rate=Good",
        ),
        ("https://shop.example.com/Übersicht.pdf", "https://shop.example.com/%C3%9Cbersicht.pdf"),
        ("https://shop.example.com/a%2Fb?x=%26y", "https://shop.example.com/a%2Fb?x=%26y"),
    ],
)
def test_click_redirects_exactly(gateway: RunningGateway, api: ApiCaller, href: str, location: str) -> None:
    create_contact(api)
    click = tracking_paths(instrument(api, f'<a href="{href}">x</a>').html, "c")[0]

    status, headers, _ = gateway.request("GET", click)

    assert status == 302
    assert headers["location"] == location


def test_bracket_query_reaches_shop_unchanged(gateway: RunningGateway, api: ApiCaller) -> None:
    create_contact(api)
    href = "https://shop.example.com/search?fulltext=campus&f[0]=themes:2&f[1]=themes:1706"
    click = tracking_paths(instrument(api, f'<a href="{href}">x</a>').html, "c")[0]

    _, headers, _ = gateway.request("GET", click)

    location = headers["location"]
    assert urlsplit(location)[:3] == urlsplit(href)[:3]
    assert parse_qsl(unquote(urlsplit(location).query)) == parse_qsl(urlsplit(href).query)


def _one_click(api: ApiCaller) -> str:
    create_contact(api)
    return tracking_paths(instrument(api, '<a href="https://shop.example.com/x">x</a>').html, "c")[0]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda path: path[:-5],
        lambda path: path[:-1] + ("A" if path[-1] != "A" else "B"),
        lambda path: path[:12] + ("A" if path[12] != "A" else "B") + path[13:],
        lambda path: "/c/",
        lambda path: "/c/%ZZ",
    ],
)
def test_broken_click_token_is_404(gateway: RunningGateway, api: ApiCaller, mangle: Callable[[str], str]) -> None:
    path = mangle(_one_click(api))

    status, headers, body = gateway.request("GET", path)
    time.sleep(0.3)

    assert status == 404
    assert "location" not in headers
    assert b"not valid" in body
    assert gateway.app.recorder.counters.stored == 0


def test_unsigned_destination_is_ignored(gateway: RunningGateway, api: ApiCaller) -> None:
    path = _one_click(api)

    status, headers, _ = gateway.request("GET", path + "?url=https://evil.example.net/")

    assert status == 302
    assert headers["location"] == "https://shop.example.com/x"


def test_invalid_pixel_still_answers_gif(gateway: RunningGateway) -> None:
    status, headers, body = gateway.request("GET", "/o/not-a-token.gif")
    time.sleep(0.3)

    assert status == 200
    assert body == PIXEL_GIF
    assert headers["content-type"] == "image/gif"
    assert gateway.app.recorder.counters.stored == 0


def test_head_click_redirects_as_bot(gateway: RunningGateway, api: ApiCaller) -> None:
    path = _one_click(api)

    status, headers, body = gateway.request("HEAD", path, headers={"user-agent": CHROME})
    events = wait_for_events(api, "msg-1", 1)

    assert status == 302
    assert headers["location"] == "https://shop.example.com/x"
    assert body == b""
    assert events[0].http_method == "HEAD"
    assert events[0].is_bot


def test_prefetch_header_is_forwarded(gateway: RunningGateway, api: ApiCaller) -> None:
    path = _one_click(api)

    gateway.request("GET", path, headers={"user-agent": CHROME, "sec-purpose": "prefetch"})
    events = wait_for_events(api, "msg-1", 1)

    assert events[0].is_bot
    assert "prefetch_header" in events[0].bot_signals


def _sign_click(keyring: SigningKeyring, workspace_id: uuid.UUID, contact_id: str) -> str:
    claims = TrackingClaims(
        kind=TrackingKind.CLICK,
        workspace_id=workspace_id,
        message_id="rotated",
        contact_id=uuid.UUID(contact_id),
        link_id="1-abc",
        destination="https://shop.example.com/old",
    )
    return click_path(sign_tracking_token(claims, keyring))


def test_rotated_key_keeps_working_while_in_ring(
    grpc_server: RunningServer, api: ApiCaller, tmp_path: Path, database_engine: Engine
) -> None:
    contact_id = create_contact(api)
    old_only = parse_signing_keys(PREVIOUS_LINK_KEY)
    assert old_only is not None
    workspace_id = _workspace_of(database_engine, api.api_key)
    path = _sign_click(old_only, workspace_id, contact_id)
    both = RunningGateway(gateway_settings(grpc_server.address, tmp_path / "a.sqlite3"))
    current_only = RunningGateway(
        gateway_settings(grpc_server.address, tmp_path / "b.sqlite3", link_signing_keys=CURRENT_LINK_KEY)
    )
    try:
        accepted = both.request("GET", path)
        rejected = current_only.request("GET", path)
    finally:
        both.stop()
        current_only.stop()

    assert accepted[0] == 302
    assert accepted[1]["location"] == "https://shop.example.com/old"
    assert rejected[0] == 404
    assert len(wait_for_events(api, "rotated", 1)) == 1


def _workspace_of(engine: Engine, api_key: str) -> uuid.UUID:
    from sqlalchemy import select

    from server.adapters.database.schema import ApiKeyRow
    from server.domain.api_keys import hash_api_key

    with engine.connect() as connection:
        workspace_id = connection.scalar(
            select(ApiKeyRow.workspace_id).where(ApiKeyRow.key_hash == hash_api_key(api_key))
        )
    assert workspace_id is not None
    return workspace_id


@pytest.mark.parametrize(("trusted", "expected"), [("127.0.0.1/32", "203.0.113.9"), ("", "127.0.0.1")])
def test_forwarded_for_only_from_trusted_proxy(
    grpc_server: RunningServer, api: ApiCaller, tmp_path: Path, trusted: str, expected: str
) -> None:
    path = _one_click(api)
    running = RunningGateway(gateway_settings(grpc_server.address, tmp_path / "s.sqlite3", trusted_proxies=trusted))
    try:
        running.request("GET", path, headers={"user-agent": CHROME, "x-forwarded-for": "198.51.100.1, 203.0.113.9"})
        events = wait_for_events(api, "msg-1", 1)
    finally:
        running.stop()

    assert events[0].client_ip == expected


def test_health_reports_spool(gateway: RunningGateway) -> None:
    status, _, body = gateway.request("GET", "/healthz")

    document = json.loads(body)
    assert status == 200
    assert document["status"] == "ok"
    assert document["spooled_hits"] == 0


def test_hits_survive_grpc_outage_and_gateway_restart(
    database_url: str, database_engine: Engine, tmp_path: Path
) -> None:
    settings = {
        "link_signing_keys": LINK_SIGNING_KEYS,
        "gateway_secret": GATEWAY_SECRET,
        "tracking_base_url": "https://t.example.com",
    }
    server = RunningServer.start(database_url, **settings)
    grpc_address = server.address
    api = ApiCaller(grpc_address, create_workspace_key(database_engine))
    create_contact(api)
    message_id = f"outage-{uuid.uuid4().hex[:8]}"
    html = '<a href="https://shop.example.com/a">a</a>'
    response = instrument(api, html, message_id=message_id)
    click = tracking_paths(response.html, "c")[0]
    pixel = tracking_paths(response.html, "o")[0]
    api.close()
    server.stop()
    spool_path = tmp_path / "spool.sqlite3"

    first_gateway = RunningGateway(gateway_settings(grpc_address, spool_path))
    started = time.monotonic()
    answers = [first_gateway.request("GET", pixel, headers={"user-agent": CHROME})[0] for _ in range(5)]
    answers += [first_gateway.request("GET", click, headers={"user-agent": CHROME})[0] for _ in range(3)]
    answer_seconds = time.monotonic() - started
    first_gateway.stop()
    second_gateway = RunningGateway(gateway_settings(grpc_address, spool_path))
    spooled = json.loads(second_gateway.request("GET", "/healthz")[2])["spooled_hits"]
    server = RunningServer.start(database_url, grpc_listen=grpc_address, **settings)
    api = ApiCaller(grpc_address, api.api_key)
    try:
        events = wait_for_events(api, message_id, 8, timeout=20)
        time.sleep(1.0)
        events = wait_for_events(api, message_id, 8)
        left = json.loads(second_gateway.request("GET", "/healthz")[2])["spooled_hits"]
    finally:
        second_gateway.stop()
        api.close()
        server.stop()

    assert answers == [200] * 5 + [302] * 3
    assert answer_seconds < 5
    assert spooled == 8
    assert left == 0
    opens = [event for event in events if event.event_type == email_event_pb2.EMAIL_EVENT_TYPE_OPENED]
    clicks = [event for event in events if event.event_type == email_event_pb2.EMAIL_EVENT_TYPE_CLICKED]
    assert len(opens) == 5
    assert len(clicks) == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"email": "a@example.com", "price": 1e999999}', 422, "VALIDATION_FAILED"),
        (b'{"email": "a@example.com", "brand": "\\ud800"}', 422, "VALIDATION_FAILED"),
        (b"[" * 30_000, 400, "INVALID_JSON"),
        (b'{"email": "a@example.com", "email": "b@example.com"}', 400, "INVALID_JSON"),
        (b'{"email": "a@example.com", "price": NaN}', 400, "INVALID_JSON"),
    ],
)
def test_json_edge_cases_are_4xx(gateway: RunningGateway, api: ApiCaller, body: bytes, status: int, code: str) -> None:
    answer_status, headers, payload = gateway.request(
        "POST", "/api/v1/track/product-view", headers={"authorization": f"Bearer {api.api_key}"}, body=body
    )

    assert answer_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(payload)["error"]["code"] == code


@pytest.mark.parametrize("authorization", [b"Bearer \xff\xfe", b"Bearer tm_live_\tkey", b"Bearer " + b"k" * 60_000])
def test_json_unusable_authorization_is_401(gateway: RunningGateway, authorization: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.putrequest("POST", "/api/v1/track/product-view")
        connection.putheader("Authorization", authorization)
        connection.putheader("Content-Length", str(len(json.dumps(EXAMPLE_BODY))))
        connection.endheaders(json.dumps(EXAMPLE_BODY).encode())
        response = connection.getresponse()
        status, payload = response.status, response.read()
    finally:
        connection.close()

    assert status == 401
    assert json.loads(payload)["error"]["code"] == "API_KEY_INVALID"


def test_utf8_user_agent_is_recorded_intact(gateway: RunningGateway, api: ApiCaller) -> None:
    path = _one_click(api)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.putrequest("GET", path)
        connection.putheader("User-Agent", "Mozilla/5.0 Mail café \u2026 \u5c0f\u7c73".encode())
        connection.endheaders()
        status = connection.getresponse().status
    finally:
        connection.close()
    events = wait_for_events(api, "msg-1", 1)

    assert status == 302
    assert events[0].user_agent == "Mozilla/5.0 Mail café \u2026 \u5c0f\u7c73"


def test_control_characters_in_user_agent_keep_the_hit(gateway: RunningGateway, api: ApiCaller) -> None:
    path = _one_click(api)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.putrequest("GET", path)
        connection.putheader("User-Agent", b"Mozilla/5.0 \x85 browser")
        connection.endheaders()
        connection.getresponse().read()
    finally:
        connection.close()
    events = wait_for_events(api, "msg-1", 1)

    assert events[0].user_agent == "Mozilla/5.0 ? browser"
