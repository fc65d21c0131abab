"""The gateway as a plain ASGI application, kept free of frameworks because it serves every pixel."""

from __future__ import annotations

import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.domain.classification.networks import IPNetwork
from server.domain.classification.prefetch import PREFETCH_MARKERS
from server.domain.errors import ValidationFailed
from server.domain.tracking_links import InvalidTrackingToken, SigningKeyring, TrackingKind, verify_tracking_token
from server.entrypoints.error_table import mapping_for, mapping_for_reason
from server.entrypoints.gateway.client_address import client_address
from server.entrypoints.gateway.product_view_json import (
    InvalidJson,
    json_field_path,
    parse_body,
    track_request,
    view_document,
)
from server.entrypoints.gateway.recording import HitRecorder
from topmail.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A transparent 1x1 GIF89a image, 43 bytes.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = b"no-store, no-cache, must-revalidate, private"
NOT_FOUND_PAGE = b"<!doctype html><title>Link not found</title><p>This link is not valid.</p>\n"
HONEYPOT_PAGE = b"<!doctype html><title>Thank you</title><p>Nothing to see here.</p>\n"
PRODUCT_VIEW_PATH = "/api/v1/track/product-view"
HEALTH_PATH = "/healthz"
# Header names (lower case) forwarded for classification, such as Sec-Purpose: prefetch.
CLASSIFICATION_HEADERS = frozenset(marker.header for marker in PREFETCH_MARKERS)
MAX_USER_AGENT_LENGTH = 2048
MAX_HEADER_VALUE_LENGTH = 1024
MAX_AUTHORIZATION_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Settings of the gateway besides its recorder and gRPC channel."""

    keyring: SigningKeyring
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 65_536
    grpc_timeout_seconds: float = 10.0


# Creates the gRPC channel and the recorder inside the server's event loop, at startup.
Connector = Callable[[], tuple[grpc.aio.Channel, HitRecorder]]


class TrackingGateway:
    """Serves tracking URLs and the JSON product-view API, and records every hit through gRPC."""

    def __init__(self, config: GatewayConfig, connect: Connector) -> None:
        self._config = config
        self._connect = connect
        self._channel: grpc.aio.Channel | None = None
        self._recorder: HitRecorder | None = None
        self._tracking: tracking_service_pb2_grpc.TrackingServiceAsyncStub | None = None

    @property
    def recorder(self) -> HitRecorder:
        if self._recorder is None:
            raise RuntimeError("the gateway has not started: its ASGI server must run the lifespan protocol")
        return self._recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        status = await self._route_safely(scope, receive, send)
        logger.info(
            "gateway request",
            extra={
                "method": scope["method"],
                "route": _route_name(scope["path"]),
                "status": int(status),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    async def _route_safely(self, scope: Scope, receive: Receive, send: Send) -> HTTPStatus:
        """Route a request; on a bug, log it and still send the pixel, or a 500 page when nothing was sent."""
        started_response = False

        async def tracked_send(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send(message)

        try:
            return await self._route(scope, receive, tracked_send)
        except Exception:
            logger.exception("gateway request failed", extra={"route": _route_name(scope["path"])})
            if started_response:
                return HTTPStatus.INTERNAL_SERVER_ERROR
            if _route_name(scope["path"]) == "open_pixel":
                headers = [(b"content-type", b"image/gif"), (b"cache-control", NO_STORE)]
                return await _send(send, HTTPStatus.OK, headers, PIXEL_GIF)
            return await _send_json_error(send, HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._channel, self._recorder = self._connect()
                self._tracking = tracking_service_pb2_grpc.TrackingServiceStub(self._channel)
                self._recorder.start()
                logger.info("gateway started")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._recorder is not None:
                    await self._recorder.stop()
                if self._channel is not None:
                    await self._channel.close(None)
                logger.info("gateway stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> HTTPStatus:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == PRODUCT_VIEW_PATH:
            if method != "POST":
                return await _send_json_error(send, HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "use POST")
            return await self._track_product_view(scope, receive, send)
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            return await self._health(send, head_only=method == "HEAD")
        if method not in ("GET", "HEAD"):
            return await _send(send, HTTPStatus.METHOD_NOT_ALLOWED, [(b"allow", b"GET, HEAD")], b"")
        head_only = method == "HEAD"
        if path.startswith("/o/") and path.endswith(".gif"):
            return await self._open_pixel(scope, send, path[3:-4], head_only)
        if path.startswith("/c/"):
            return await self._click(scope, send, path[3:], head_only)
        if path.startswith("/h/"):
            return await self._honeypot(scope, send, path[3:], head_only)
        return await _send_page(send, HTTPStatus.NOT_FOUND, NOT_FOUND_PAGE, head_only)

    async def _open_pixel(self, scope: Scope, send: Send, token: str, head_only: bool) -> HTTPStatus:
        # The pixel is always served, so that mail clients never show a broken image.
        if self._claims(token, TrackingKind.OPEN) is not None:
            self._record(scope, token, tracking_service_pb2.TRACKING_HIT_KIND_OPEN)
        headers = [(b"content-type", b"image/gif"), (b"cache-control", NO_STORE), (b"pragma", b"no-cache")]
        return await _send(send, HTTPStatus.OK, headers, b"" if head_only else PIXEL_GIF, len(PIXEL_GIF))

    async def _click(self, scope: Scope, send: Send, token: str, head_only: bool) -> HTTPStatus:
        claims = self._claims(token, TrackingKind.CLICK)
        if claims is None or claims.destination is None:
            return await _send_page(send, HTTPStatus.NOT_FOUND, NOT_FOUND_PAGE, head_only)
        self._record(scope, token, tracking_service_pb2.TRACKING_HIT_KIND_CLICK)
        # The destination was normalized to an ASCII URI when it was signed, so it goes out as is.
        headers = [(b"location", claims.destination.encode("ascii")), (b"cache-control", NO_STORE)]
        return await _send(send, HTTPStatus.FOUND, headers, b"")

    async def _honeypot(self, scope: Scope, send: Send, token: str, head_only: bool) -> HTTPStatus:
        if self._claims(token, TrackingKind.HONEYPOT) is None:
            return await _send_page(send, HTTPStatus.NOT_FOUND, NOT_FOUND_PAGE, head_only)
        self._record(scope, token, tracking_service_pb2.TRACKING_HIT_KIND_HONEYPOT)
        return await _send_page(send, HTTPStatus.OK, HONEYPOT_PAGE, head_only)

    def _claims(self, token: str, kind: TrackingKind) -> Any:
        try:
            return verify_tracking_token(token, self._config.keyring, expected_kind=kind)
        except InvalidTrackingToken as error:
            logger.info("invalid tracking token", extra={"kind": kind.value, "reason": error.reason})
            return None

    def _record(self, scope: Scope, token: str, kind: tracking_service_pb2.TrackingHitKind.ValueType) -> None:
        headers = _headers(scope)
        now_ns = time.time_ns()
        occurred_at = timestamp_pb2.Timestamp(seconds=now_ns // 1_000_000_000, nanos=now_ns % 1_000_000_000)
        peer = scope.get("client")
        hit = tracking_service_pb2.TrackingHit(
            token=token,
            kind=kind,
            occurred_at=occurred_at,
            client_ip=client_address(
                peer[0] if peer else None, headers.get("x-forwarded-for", []), self._config.trusted_proxies
            ),
            user_agent=_clean(_first(headers, "user-agent"), MAX_USER_AGENT_LENGTH),
            http_method=scope["method"],
            request_headers={
                name: _clean(values[0], MAX_HEADER_VALUE_LENGTH)
                for name, values in headers.items()
                if name in CLASSIFICATION_HEADERS
            },
            idempotency_key=uuid.uuid4().hex,
        )
        self.recorder.submit(hit)

    async def _track_product_view(self, scope: Scope, receive: Receive, send: Send) -> HTTPStatus:
        body = await _read_body(scope, receive, self._config.max_body_bytes)
        if body is None:
            return await _send_json_error(
                send,
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "REQUEST_TOO_LARGE",
                f"the body must be at most {self._config.max_body_bytes} bytes",
            )
        try:
            request = track_request(parse_body(body))
        except InvalidJson as error:
            return await _send_json_error(send, HTTPStatus.BAD_REQUEST, "INVALID_JSON", str(error))
        except ValidationFailed as error:
            fields = [{"field": violation.field, "message": violation.description} for violation in error.violations]
            mapping = mapping_for(error)
            return await _send_json_error(send, mapping.http_status, mapping.reason, error.message, fields)

        authorizations = _headers(scope).get("authorization", [])
        authorization = authorizations[0] if len(authorizations) == 1 else ""
        if len(authorizations) > 1 or (authorization and not _is_metadata_value(authorization)):
            # gRPC metadata takes printable ASCII only, and no API key is longer than this.
            return await _send_json_error(
                send, HTTPStatus.UNAUTHORIZED, "API_KEY_INVALID", "invalid API key: it is malformed, unknown or revoked"
            )
        metadata = (("authorization", authorization),) if authorization else ()
        assert self._tracking is not None
        try:
            response = await self._tracking.TrackProductView(
                request, metadata=metadata, timeout=self._config.grpc_timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            return await _send_grpc_error(send, error)
        return await _send_json(send, HTTPStatus.OK, view_document(response.product_view))

    async def _health(self, send: Send, *, head_only: bool) -> HTTPStatus:
        counters = self.recorder.counters
        healthy = self.recorder.healthy
        document = {
            "status": "ok" if healthy else "degraded",
            "last_failure": self.recorder.last_failure,
            "queued_hits": self.recorder.queued,
            "sending_hits": self.recorder.sending,
            "spooled_hits": self.recorder.spooled_hits(),
            "stored_hits": counters.stored,
            "replayed_hits": counters.replayed,
            "rejected_hits": counters.rejected,
            "dropped_hits": counters.dropped,
        }
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return await _send_json(send, status, document, head_only=head_only)


def _route_name(path: str) -> str:
    """Return the route without its token, so that log lines never carry one."""
    for prefix, name in (("/o/", "open_pixel"), ("/c/", "click"), ("/h/", "honeypot")):
        if path.startswith(prefix):
            return name
    return path if path in (PRODUCT_VIEW_PATH, HEALTH_PATH) else "other"


def _is_metadata_value(value: str) -> bool:
    return len(value) <= MAX_AUTHORIZATION_LENGTH and all(" " <= character <= "~" for character in value)


def _header_text(value: bytes) -> str:
    """Decode a header value as UTF-8, which today's clients send, else as ISO-8859-1 (RFC 9110)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _headers(scope: Scope) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(name.decode("latin-1").lower(), []).append(_header_text(value))
    return headers


def _first(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name)
    return values[0] if values else ""


def _clean(value: str, max_length: int) -> str:
    """Cut a header value to the length the server accepts and replace characters it rejects with "?".

    Those are control characters (tab aside), surrogates and unassigned code points. NOTE: a
    longer user agent is recorded cut short rather than rejected, so that the hit is kept.
    """
    value = value[:max_length]
    # Printable ASCII, which nearly every real header value is, has none of those characters.
    if value.isascii() and value.isprintable():
        return value
    return "".join(
        "?" if character != "\t" and unicodedata.category(character) in ("Cc", "Cs", "Cn") else character
        for character in value
    )


async def _read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes | None:
    """Read the request body; return None as soon as it exceeds `max_bytes`."""
    declared = _first(_headers(scope), "content-length")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(
    send: Send,
    status: HTTPStatus,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    content_length: int | None = None,
) -> HTTPStatus:
    length = len(body) if content_length is None else content_length
    await send(
        {
            "type": "http.response.start",
            "status": int(status),
            "headers": [*headers, (b"content-length", str(length).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_page(send: Send, status: HTTPStatus, page: bytes, head_only: bool) -> HTTPStatus:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", NO_STORE)]
    return await _send(send, status, headers, b"" if head_only else page, len(page))


async def _send_json(send: Send, status: HTTPStatus, document: object, *, head_only: bool = False) -> HTTPStatus:
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    return await _send(send, status, headers, b"" if head_only else body, len(body))


async def _send_json_error(
    send: Send, status: HTTPStatus, code: str, message: str, fields: list[dict[str, str]] | None = None
) -> HTTPStatus:
    error: dict[str, object] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return await _send_json(send, status, {"error": error})


async def _send_grpc_error(send: Send, error: grpc.aio.AioRpcError) -> HTTPStatus:
    """Send the HTTP status and JSON body that a failed TrackProductView call maps to."""
    reason = ""
    fields: list[dict[str, str]] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields = [
                {"field": json_field_path(violation.field), "message": violation.description}
                for violation in bad_request.field_violations
            ]
    mapping = mapping_for_reason(reason) if reason else None
    if mapping is not None:
        return await _send_json_error(send, mapping.http_status, mapping.reason, error.details() or "", fields)
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return await _send_json_error(
            send, HTTPStatus.GATEWAY_TIMEOUT, "TIMEOUT", "the tracking service did not answer in time"
        )
    logger.warning(
        "product view not recorded", extra={"code": error.code().name, "detail": (error.details() or "")[:200]}
    )
    return await _send_json_error(
        send, HTTPStatus.SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "the tracking service is unavailable; retry later"
    )
