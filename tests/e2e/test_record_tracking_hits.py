"""TrackingService.RecordTrackingHits called directly, as the tracking gateway calls it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tests.conftest import GATEWAY_SECRET
from tests.e2e.test_gateway import CHROME, instrument, tracking_paths
from tests.e2e.test_track_product_view import create_contact
from tests.support import ApiCaller, unpack_error
from topmail.tracking.v1 import email_event_pb2, tracking_service_pb2

GATEWAY_METADATA = (("authorization", f"Bearer {GATEWAY_SECRET}"),)
HTML = '<html><body><a href="https://shop.example.com/sale">Sale</a></body></html>'


def token_of(path: str) -> str:
    """Return the token of a tracking path such as /c/<token> or /o/<token>.gif."""
    return path.split("/")[2].removesuffix(".gif")


def hit(
    token: str, kind: tracking_service_pb2.TrackingHitKind.ValueType, **fields: Any
) -> tracking_service_pb2.TrackingHit:
    occurred_at = timestamp_pb2.Timestamp()
    occurred_at.FromDatetime(datetime.now(UTC))
    values: dict[str, Any] = {
        "token": token,
        "kind": kind,
        "occurred_at": occurred_at,
        "client_ip": "203.0.113.7",
        "user_agent": CHROME,
        "http_method": "GET",
        "idempotency_key": f"hit-{uuid.uuid4()}",
    }
    values.update(fields)
    return tracking_service_pb2.TrackingHit(**values)


def record_hits(
    api: ApiCaller,
    hits: list[tracking_service_pb2.TrackingHit],
    metadata: tuple[tuple[str, str], ...] = GATEWAY_METADATA,
) -> tracking_service_pb2.RecordTrackingHitsResponse:
    request = tracking_service_pb2.RecordTrackingHitsRequest(hits=hits)
    return api.tracking.RecordTrackingHits(request, metadata=metadata, timeout=10)


def record_hits_error(api: ApiCaller, hits: list[tracking_service_pb2.TrackingHit], **options: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        record_hits(api, hits, **options)
    return unpack_error(caught.value)


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"the status has no ErrorInfo: {status}")


@pytest.fixture
def instrumented(api: ApiCaller) -> dict[str, str]:
    """Tokens of a new message's pixel and click link, keyed by "open" and "click"."""
    create_contact(api)
    html = instrument(api, HTML, message_id="hits-1").html
    return {"open": token_of(tracking_paths(html, "o")[0]), "click": token_of(tracking_paths(html, "c")[0])}


def test_each_hit_gets_own_result(api: ApiCaller, instrumented: dict[str, str]) -> None:
    token = instrumented["click"]
    # A changed character inside the token, where every bit is significant.
    altered = token[:9] + ("A" if token[9] != "A" else "B") + token[10:]
    hits = [
        hit(instrumented["open"], tracking_service_pb2.TRACKING_HIT_KIND_OPEN),
        hit(instrumented["click"], tracking_service_pb2.TRACKING_HIT_KIND_CLICK),
        hit(altered, tracking_service_pb2.TRACKING_HIT_KIND_CLICK),
    ]

    results = record_hits(api, hits).results

    assert [result.status.code for result in results] == [code_pb2.OK, code_pb2.OK, code_pb2.INVALID_ARGUMENT]
    assert error_info(results[2].status).reason == "TRACKING_TOKEN_INVALID"
    assert results[2].email_event_id == ""
    listed = api.tracking.ListEmailEvents(
        tracking_service_pb2.ListEmailEventsRequest(message_id="hits-1"), metadata=api.metadata, timeout=10
    ).email_events
    by_id = {event.id: event for event in listed}
    assert by_id[results[0].email_event_id].event_type == email_event_pb2.EMAIL_EVENT_TYPE_OPENED
    clicked = by_id[results[1].email_event_id]
    assert clicked.event_type == email_event_pb2.EMAIL_EVENT_TYPE_CLICKED
    assert clicked.link_url == "https://shop.example.com/sale"
    assert clicked.client_ip == "203.0.113.7"


def test_resent_hit_is_stored_once(api: ApiCaller, instrumented: dict[str, str]) -> None:
    opened = hit(instrumented["open"], tracking_service_pb2.TRACKING_HIT_KIND_OPEN)

    first = record_hits(api, [opened]).results[0]
    second = record_hits(api, [opened]).results[0]

    assert first.status.code == code_pb2.OK
    assert second.status.code == code_pb2.OK
    assert second.email_event_id == first.email_event_id


def test_hit_of_wrong_kind_is_rejected(api: ApiCaller, instrumented: dict[str, str]) -> None:
    result = record_hits(api, [hit(instrumented["click"], tracking_service_pb2.TRACKING_HIT_KIND_OPEN)]).results[0]

    assert result.status.code == code_pb2.INVALID_ARGUMENT
    assert error_info(result.status).reason == "TRACKING_TOKEN_INVALID"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer wrong-gateway-secret-0123456789abcdefgh", id="wrong-secret"),
        pytest.param(None, id="missing"),
    ],
)
def test_wrong_gateway_secret_is_unauthenticated(
    api: ApiCaller, instrumented: dict[str, str], authorization: str | None
) -> None:
    metadata = (("authorization", authorization),) if authorization else ()

    error = record_hits_error(
        api, [hit(instrumented["open"], tracking_service_pb2.TRACKING_HIT_KIND_OPEN)], metadata=metadata
    )

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.info is not None
    assert error.info.reason == "GATEWAY_SECRET_INVALID"


def test_workspace_api_key_is_not_gateway_secret(api: ApiCaller, instrumented: dict[str, str]) -> None:
    error = record_hits_error(
        api, [hit(instrumented["open"], tracking_service_pb2.TRACKING_HIT_KIND_OPEN)], metadata=api.metadata
    )

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.info is not None
    assert error.info.reason == "GATEWAY_SECRET_INVALID"


def test_empty_batch_is_invalid(api: ApiCaller) -> None:
    error = record_hits_error(api, [])

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None
    assert error.info.reason == "VALIDATION_FAILED"
    assert error.violated_fields == ["hits"]
