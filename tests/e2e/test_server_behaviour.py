"""Server-wide behaviour: health, malformed input, deadlines, faults and shutdown.

Reflection is tested with the other descriptor checks in tests/contract/test_descriptor_coverage.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from google.type import money_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from server.adapters.database.schema import ProductViewRow
from server.domain.api_keys import ApiKeyMode
from server.entrypoints.grpc_api.app import CONTACT_SERVICE, TRACKING_SERVICE
from server.entrypoints.grpc_api.binding import ServiceBinder
from server.usecases.ports import Workspace
from server.usecases.workspaces import Authenticator
from tests.e2e.test_track_product_view import create_contact, example_request, track
from tests.support import ApiCaller, RunningServer, create_workspace_key, unpack_error
from topmail.tracking.v1 import tracking_service_pb2

TRACK_PRODUCT_VIEW = "/topmail.tracking.v1.TrackingService/TrackProductView"


def test_health_reports_serving(grpc_server: RunningServer) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = [
            health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in ("", "topmail.tracking.v1.TrackingService", "topmail.tracking.v1.ContactService")
        ]

    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 3


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x02\xff\xfe",  # field 1 (email) holding invalid UTF-8
        b"\xff\xff\xff",  # not a protobuf message at all
        b"\x42\x05\x08",  # price (field 8) truncated
    ],
)
def test_malformed_request_bytes_are_invalid_argument(api: ApiCaller, payload: bytes) -> None:
    call = api.channel.unary_unary(
        TRACK_PRODUCT_VIEW, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
    )

    with pytest.raises(grpc.RpcError) as caught:
        call(payload, metadata=api.metadata, timeout=10)

    error = unpack_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None
    assert error.info.reason == "VALIDATION_FAILED"


_text = st.text(st.characters(codec="utf-8"), max_size=120)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    email=st.one_of(st.just("shopper@example.com"), st.emails(), _text),
    contact_id=st.one_of(st.just(""), st.uuids().map(str), _text),
    product_id=_text,
    product_name=_text,
    product_url=st.one_of(st.just("https://shop.example.com/p"), _text),
    image_url=_text,
    units=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    nanos=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    currency_code=_text,
    idempotency_key=_text,
)
def test_arbitrary_input_never_fails_internally(
    api: ApiCaller,
    email: str,
    contact_id: str,
    product_id: str,
    product_name: str,
    product_url: str,
    image_url: str,
    units: int,
    nanos: int,
    currency_code: str,
    idempotency_key: str,
) -> None:
    request = tracking_service_pb2.TrackProductViewRequest(
        email=email,
        contact_id=contact_id,
        product_id=product_id,
        product_name=product_name,
        product_url=product_url,
        image_url=image_url,
        price=money_pb2.Money(units=units, nanos=nanos, currency_code=currency_code),
        idempotency_key=idempotency_key,
    )

    try:
        api.tracking.TrackProductView(request, metadata=api.metadata, timeout=10)
    except grpc.RpcError as error:
        details = unpack_error(error)
        assert details.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert details.info is not None


class _OneWorkspace:
    """A workspace store that accepts every key hash, for servers without a database."""

    workspace_id = uuid.uuid4()

    def add_workspace(self, name: str, now: datetime) -> Workspace:
        raise NotImplementedError

    def find_workspace_by_name(self, name: str) -> Workspace | None:
        return None

    def add_api_key(
        self, workspace_id: uuid.UUID, key_hash: str, key_prefix: str, mode: ApiKeyMode, now: datetime
    ) -> None:
        raise NotImplementedError

    def find_workspace_id_by_key_hash(self, key_hash: str) -> uuid.UUID | None:
        return self.workspace_id


class _MisbehavingTracking:
    """A TrackingService whose method sleeps or fails, to drive the call wrapper."""

    def __init__(self, sleep_seconds: float = 0.0, failure: Exception | None = None) -> None:
        self.sleep_seconds = sleep_seconds
        self.failure = failure

    def _misbehave(self) -> None:
        time.sleep(self.sleep_seconds)
        if self.failure is not None:
            raise self.failure

    def TrackProductView(self, workspace_id: uuid.UUID, request: Any) -> tracking_service_pb2.TrackProductViewResponse:
        self._misbehave()
        return tracking_service_pb2.TrackProductViewResponse()

    def RecordEmailEvent(self, workspace_id: uuid.UUID, request: Any) -> tracking_service_pb2.RecordEmailEventResponse:
        self._misbehave()
        return tracking_service_pb2.RecordEmailEventResponse()

    def RecordEmailEvents(
        self, workspace_id: uuid.UUID, request: Any
    ) -> tracking_service_pb2.RecordEmailEventsResponse:
        self._misbehave()
        return tracking_service_pb2.RecordEmailEventsResponse()

    def ListEmailEvents(self, workspace_id: uuid.UUID, request: Any) -> tracking_service_pb2.ListEmailEventsResponse:
        self._misbehave()
        return tracking_service_pb2.ListEmailEventsResponse()

    def GetEngagementStats(
        self, workspace_id: uuid.UUID, request: Any
    ) -> tracking_service_pb2.GetEngagementStatsResponse:
        self._misbehave()
        return tracking_service_pb2.GetEngagementStatsResponse()

    def InstrumentEmail(self, workspace_id: uuid.UUID, request: Any) -> tracking_service_pb2.InstrumentEmailResponse:
        self._misbehave()
        return tracking_service_pb2.InstrumentEmailResponse()

    def ListProductViews(self, workspace_id: uuid.UUID, request: Any) -> tracking_service_pb2.ListProductViewsResponse:
        self._misbehave()
        return tracking_service_pb2.ListProductViewsResponse()

    def RecordTrackingHits(
        self, workspace_id: uuid.UUID, request: Any
    ) -> tracking_service_pb2.RecordTrackingHitsResponse:
        self._misbehave()
        return tracking_service_pb2.RecordTrackingHitsResponse()


@pytest.fixture
def bare_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A gRPC server with only the call wrapper and a misbehaving TrackingService."""
    servicer: _MisbehavingTracking = request.param
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    binder = ServiceBinder(Authenticator(_OneWorkspace()), executor)

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((binder.bind(TRACKING_SERVICE, servicer),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    executor.shutdown(wait=True)


def _call_bare(address: str, timeout: float) -> Any:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            TRACK_PRODUCT_VIEW,
            request_serializer=tracking_service_pb2.TrackProductViewRequest.SerializeToString,
            response_deserializer=tracking_service_pb2.TrackProductViewResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(
                tracking_service_pb2.TrackProductViewRequest(),
                metadata=(("authorization", "Bearer tm_test_" + "k" * 43),),
                timeout=timeout,
            )
    return unpack_error(caught.value)


@pytest.mark.parametrize("bare_server", [_MisbehavingTracking(sleep_seconds=1.0)], indirect=True)
def test_deadline_exceeded_while_working(bare_server: str) -> None:
    started = time.monotonic()

    error = _call_bare(bare_server, timeout=0.2)

    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize("bare_server", [_MisbehavingTracking(failure=RuntimeError("bug"))], indirect=True)
def test_unexpected_error_is_internal_with_call_id(bare_server: str, caplog: pytest.LogCaptureFixture) -> None:
    error = _call_bare(bare_server, timeout=5)

    assert error.code == grpc.StatusCode.INTERNAL
    assert error.info is not None
    assert error.info.reason == "INTERNAL_ERROR"
    assert error.info.metadata["call_id"] in error.message
    assert "bug" not in error.message
    assert any(record.levelname == "ERROR" and "unexpected error" in record.message for record in caplog.records)


def test_every_rpc_is_bound() -> None:
    binder = ServiceBinder(Authenticator(_OneWorkspace()), concurrent.futures.ThreadPoolExecutor(max_workers=1))

    with pytest.raises(TypeError, match=r"does not implement topmail\.tracking\.v1\.ContactService\.CreateContact"):
        binder.bind(CONTACT_SERVICE, object())


def test_one_log_line_per_call(api: ApiCaller, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="server.entrypoints.grpc_api.binding")
    create_contact(api)

    track(api, example_request())

    lines = [record for record in caplog.records if record.message == "rpc finished"]
    assert [line.__dict__["rpc"] for line in lines][-1] == TRACK_PRODUCT_VIEW
    assert lines[-1].__dict__["code"] == "OK"
    assert lines[-1].__dict__["duration_ms"] >= 0
    assert api.api_key not in caplog.text
    assert "shopper@example.com" not in caplog.text


class _WriteLock:
    """Holds the database's write lock on product views from outside the server."""

    def __init__(self, database_url: str) -> None:
        self.url = make_url(database_url)
        self._sqlite: sqlite3.Connection | None = None
        self._engine: Engine | None = None
        self._connection: Any = None

    def acquire(self) -> None:
        if self.url.get_backend_name() == "sqlite":
            self._sqlite = sqlite3.connect(str(self.url.database), isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")
            return
        self._engine = create_engine(self.url)
        self._connection = self._engine.connect()
        self._connection.begin()
        self._connection.execute(text("LOCK TABLE product_views IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        if self._connection is not None:
            self._connection.rollback()
            self._connection.close()
            assert self._engine is not None
            self._engine.dispose()


def test_shutdown_finishes_in_flight_call(database_url: str, database_engine: Engine) -> None:
    server = RunningServer.start(database_url)
    caller = ApiCaller(server.address, create_workspace_key(database_engine))
    create_contact(caller, "inflight@example.com")
    lock = _WriteLock(database_url)
    lock.acquire()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        in_flight = pool.submit(track, caller, example_request(email="inflight@example.com"))
        time.sleep(0.5)
        stopping = pool.submit(server.stop, 10.0)
        time.sleep(0.5)
        lock.release()
        view = in_flight.result(timeout=15).product_view
        stopping.result(timeout=15)
    caller.close()

    assert view.product_id == "prod_abc123"
    with database_engine.connect() as connection:
        stored = connection.scalar(select(func.count()).where(ProductViewRow.id == uuid.UUID(view.id)))
    assert stored == 1
