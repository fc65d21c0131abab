"""Group commit through a real server: acknowledged calls are stored, errors stay per call, rules hold across batches.

The tests drive concurrent RecordEmailEvent and TrackProductView calls with gRPC futures.
Servers with "small batches" (--write-batch-size 2) split a wave of calls over many
transactions. Servers with "shared batches" (--write-batch-size 256) get the wave while a
write lock held by the test stops every batch, so the calls queue up and most of them
share one transaction once the lock is released.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.type import money_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from server.adapters.database.engagement_counters import rebuild_engagement_counters
from server.adapters.database.engine import normalize_database_url
from server.adapters.database.schema import engagement_counters, message_event_tallies
from tests.e2e.test_email_events_api import BROWSER, CLICKED, CURL, DELIVERED, OPENED, event_request
from tests.e2e.test_flow_triggers import EMAIL_CLICKED, EMAIL_OPENED, PRODUCT_VIEWED, RETRACTED, TriggerStream
from tests.e2e.test_track_product_view import create_contact, example_request
from tests.support import ApiCaller, RunningServer, create_workspace_key, unpack_error
from topmail.tracking.v1 import email_event_pb2, flow_trigger_pb2, product_view_pb2, tracking_service_pb2

ResponseT = TypeVar("ResponseT", bound=Message)

EventResponse = tracking_service_pb2.RecordEmailEventResponse
ViewResponse = tracking_service_pb2.TrackProductViewResponse

CALL_TIMEOUT_SECONDS = 30.0
# Max pages of 500 that a listing reads. The tests store far fewer events.
MAX_PAGES = 20
# The application_name of the server's PostgreSQL connections (server/adapters/database/engine.py).
SERVER_APPLICATION_NAME = "topmail-tracking"
CAMPAIGN = "group-commit"
# Seconds after delivery: well past the 10 seconds within which a click is a timing bot.
HOUR = 3600


@dataclass(frozen=True)
class Batching:
    """How a server batches writes, and whether a wave of calls is queued behind a held write lock."""

    write_batch_size: int
    queue_behind_lock: bool


SMALL_BATCHES = Batching(write_batch_size=2, queue_behind_lock=False)
SHARED_BATCHES = Batching(write_batch_size=256, queue_behind_lock=True)


@dataclass
class BatchingServer:
    server: RunningServer
    batching: Batching
    database_url: str


@pytest.fixture(scope="module", params=[SMALL_BATCHES, SHARED_BATCHES], ids=["small-batches", "shared-batches"])
def batching_server(request: pytest.FixtureRequest, database_url: str) -> Iterator[BatchingServer]:
    batching: Batching = request.param
    server = RunningServer.start(database_url, write_batch_size=batching.write_batch_size)
    yield BatchingServer(server, batching, database_url)
    server.stop()


@pytest.fixture
def api(batching_server: BatchingServer, database_engine: Engine) -> Iterator[ApiCaller]:
    """A client of a new workspace on the batching server."""
    caller = ApiCaller(batching_server.server.address, create_workspace_key(database_engine))
    yield caller
    caller.close()


# Starting calls and collecting their outcomes


def start_event(
    api: ApiCaller, request: tracking_service_pb2.RecordEmailEventRequest
) -> grpc.CallFuture[EventResponse]:
    return api.tracking.RecordEmailEvent.future(request, metadata=api.metadata, timeout=CALL_TIMEOUT_SECONDS)


def start_view(api: ApiCaller, request: tracking_service_pb2.TrackProductViewRequest) -> grpc.CallFuture[ViewResponse]:
    return api.tracking.TrackProductView.future(request, metadata=api.metadata, timeout=CALL_TIMEOUT_SECONDS)


def outcome_of(future: grpc.CallFuture[ResponseT]) -> ResponseT | grpc.RpcError:
    """Return the call's response, or its error. Every call has a deadline, so this returns."""
    try:
        return future.result()
    except grpc.RpcError as error:
        return error


def outcomes_of(futures: Sequence[grpc.CallFuture[ResponseT]]) -> list[ResponseT | grpc.RpcError]:
    return [outcome_of(future) for future in futures]


def responses_of(futures: Sequence[grpc.CallFuture[ResponseT]]) -> list[ResponseT]:
    """Return every call's response, or fail on the first call that failed."""
    responses: list[ResponseT] = []
    for index, outcome in enumerate(outcomes_of(futures)):
        if isinstance(outcome, grpc.RpcError):
            raise AssertionError(f"call {index} failed: {unpack_error(outcome)}")
        responses.append(outcome)
    return responses


def status_code_of(error: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)
    return error.code()


def check_health(api: ApiCaller) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    response = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_SECONDS)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def write_lock_held(database_url: str) -> Iterator[None]:
    """Hold a lock that stops the server's batches of e-mail events and product views until the block ends."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        lock = sqlite3.connect(str(url.database), isolation_level=None)
        try:
            # The server's transactions also begin IMMEDIATE, so they wait for this one.
            lock.execute("BEGIN IMMEDIATE")
            yield
            lock.execute("ROLLBACK")
        finally:
            lock.close()
        return
    engine = create_engine(normalize_database_url(database_url), connect_args={"application_name": "topmail-test-lock"})
    try:
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE email_events, product_views IN ACCESS EXCLUSIVE MODE"))
            yield
            connection.rollback()
    finally:
        engine.dispose()


@contextmanager
def wave(target: BatchingServer, callers: Sequence[ApiCaller]) -> Iterator[None]:
    """Start the calls of the block as one wave. With shared batches, they queue behind a write lock.

    Every caller must have made a call before, so that the server has its API key cached,
    because on SQLite looking the key up would wait for the lock as well.
    """
    if not target.batching.queue_behind_lock:
        yield
        return
    with write_lock_held(target.database_url):
        yield
        # A health check needs no database. The calls of one channel go out on one HTTP/2
        # connection in the order they started, so once a later health check returns, the wave
        # has very likely reached the group commit. Only how many calls share a batch depends
        # on it, which test_wave_batches_have_configured_size checks.
        for caller in callers:
            check_health(caller)


# Reading what is stored


def all_email_events(api: ApiCaller, **filters: Any) -> list[email_event_pb2.EmailEvent]:
    """Return every event of the caller's workspace that matches the filters, newest first."""
    events: list[email_event_pb2.EmailEvent] = []
    token = ""
    for _ in range(MAX_PAGES):
        request = tracking_service_pb2.ListEmailEventsRequest(page_size=500, page_token=token, **filters)
        page = api.tracking.ListEmailEvents(request, metadata=api.metadata, timeout=CALL_TIMEOUT_SECONDS)
        events.extend(page.email_events)
        token = page.next_page_token
        if not token:
            return events
    raise AssertionError(f"ListEmailEvents returned more than {MAX_PAGES} pages")


def all_product_views(api: ApiCaller, contact_id: str) -> list[product_view_pb2.ProductView]:
    """Return every view of the contact, newest first."""
    views: list[product_view_pb2.ProductView] = []
    token = ""
    for _ in range(MAX_PAGES):
        request = tracking_service_pb2.ListProductViewsRequest(contact_id=contact_id, page_size=500, page_token=token)
        page = api.tracking.ListProductViews(request, metadata=api.metadata, timeout=CALL_TIMEOUT_SECONDS)
        views.extend(page.product_views)
        token = page.next_page_token
        if not token:
            return views
    raise AssertionError(f"ListProductViews returned more than {MAX_PAGES} pages")


def assert_stored_exactly(
    api: ApiCaller, contact_ids: Sequence[str], events: Sequence[EventResponse], views: Sequence[ViewResponse]
) -> None:
    """Check that the workspace stores exactly the events and views of the responses, each once."""
    expected_events: dict[str, email_event_pb2.EmailEvent] = {}
    for response in events:
        expected_events[response.email_event.id] = response.email_event
        for created in response.created_events:
            expected_events[created.id] = created
    stored_events = all_email_events(api)
    stored_by_id = {event.id: event for event in stored_events}

    assert len(stored_by_id) == len(stored_events)
    assert sorted(stored_by_id) == sorted(expected_events)
    for event_id, expected in expected_events.items():
        stored = stored_by_id[event_id]
        assert (stored.event_type, stored.occurred_at, stored.idempotency_key) == (
            expected.event_type,
            expected.occurred_at,
            expected.idempotency_key,
        ), f"stored event {event_id} differs from the response"
    key_counts = Counter(event.idempotency_key for event in stored_events if event.idempotency_key)
    assert [key for key, count in key_counts.items() if count > 1] == []

    stored_views = [view for contact_id in contact_ids for view in all_product_views(api, contact_id)]
    assert sorted(view.id for view in stored_views) == sorted(response.product_view.id for response in views)


# Requests of the load tests


def load_event_requests(emails: Sequence[str], count: int, key_prefix: str) -> list[Any]:
    """Return `count` opens, human clicks and bot clicks spread over the contacts and four messages.

    Events are 60 s apart, so no click burst forms, and an hour or more after delivery, so
    no click is a timing bot. Every request has an idempotency key.
    """
    kinds: list[dict[str, Any]] = [
        {"event_type": OPENED},
        {"event_type": CLICKED},
        {"event_type": CLICKED, "user_agent": CURL},
    ]
    return [
        event_request(
            email=emails[index % len(emails)],
            message_id=f"load-{index % 4}",
            campaign_id=CAMPAIGN,
            at=HOUR + 60 * index,
            idempotency_key=f"{key_prefix}-event-{index}",
            **kinds[index % len(kinds)],
        )
        for index in range(count)
    ]


def load_view_requests(emails: Sequence[str], count: int, key_prefix: str) -> list[Any]:
    return [
        example_request(
            email=emails[index % len(emails)],
            product_id=f"product-{index}",
            idempotency_key=f"{key_prefix}-view-{index}",
        )
        for index in range(count)
    ]


def create_contacts(api: ApiCaller, count: int) -> tuple[list[str], list[str]]:
    """Create `count` contacts and return their e-mail addresses and ids."""
    emails = [f"reader-{index}@example.com" for index in range(count)]
    return emails, [create_contact(api, email) for email in emails]


def retry_failed(
    start: Callable[[Any], grpc.CallFuture[ResponseT]],
    requests: Sequence[Any],
    outcomes: list[ResponseT | grpc.RpcError],
) -> list[ResponseT]:
    """Send every failed request again, up to 3 times, and return all responses in request order."""
    responses: list[ResponseT] = []
    for request, outcome in zip(requests, outcomes, strict=True):
        for _ in range(3):
            if not isinstance(outcome, grpc.RpcError):
                break
            outcome = outcome_of(start(request))
        if isinstance(outcome, grpc.RpcError):
            raise AssertionError(f"a retry of {request.idempotency_key} failed 3 times: {unpack_error(outcome)}")
        responses.append(outcome)
    return responses


def failure_codes(outcomes: Sequence[Message | grpc.RpcError]) -> set[grpc.StatusCode]:
    return {status_code_of(outcome) for outcome in outcomes if isinstance(outcome, grpc.RpcError)}


# Durability after acknowledgement


def test_acknowledged_calls_are_stored(database_url: str, database_engine: Engine) -> None:
    server = RunningServer.start(database_url, write_batch_size=4)
    api = ApiCaller(server.address, create_workspace_key(database_engine))
    try:
        emails, contact_ids = create_contacts(api, 6)
        event_requests = load_event_requests(emails, 240, "load")
        view_requests = load_view_requests(emails, 120, "load")

        event_futures = [start_event(api, request) for request in event_requests]
        view_futures = [start_view(api, request) for request in view_requests]
        events = responses_of(event_futures)
        views = responses_of(view_futures)

        assert_stored_exactly(api, contact_ids, events, views)
    finally:
        api.close()
        server.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_terminated_connections_lose_no_acknowledged_call(database_url: str, database_engine: Engine) -> None:
    server = RunningServer.start(database_url, write_batch_size=4)
    api = ApiCaller(server.address, create_workspace_key(database_engine))
    terminator = create_engine(
        normalize_database_url(database_url),
        isolation_level="AUTOCOMMIT",
        connect_args={"application_name": "topmail-test-terminator"},
    )
    try:
        emails, contact_ids = create_contacts(api, 6)
        event_requests = load_event_requests(emails, 300, "terminated")
        view_requests = load_view_requests(emails, 100, "terminated")
        event_outcomes: list[EventResponse | grpc.RpcError] = []
        view_outcomes: list[ViewResponse | grpc.RpcError] = []
        terminated = 0

        with terminator.connect() as connection:
            for round_number in range(5):
                events = event_requests[round_number * 60 : (round_number + 1) * 60]
                views = view_requests[round_number * 20 : (round_number + 1) * 20]
                event_futures = [start_event(api, request) for request in events]
                view_futures = [start_view(api, request) for request in views]
                # Wait for the first response, so that the server is busy with the round, then cut it off.
                outcome_of(event_futures[0])
                terminated += terminate_server_connections(connection)
                event_outcomes += outcomes_of(event_futures)
                view_outcomes += outcomes_of(view_futures)

        assert terminated > 0
        assert failure_codes([*event_outcomes, *view_outcomes]) <= {grpc.StatusCode.UNAVAILABLE}
        acknowledged_events = [outcome for outcome in event_outcomes if not isinstance(outcome, grpc.RpcError)]
        acknowledged_views = [outcome for outcome in view_outcomes if not isinstance(outcome, grpc.RpcError)]
        stored_event_ids = {event.id for event in all_email_events(api)}
        assert {response.email_event.id for response in acknowledged_events} <= stored_event_ids
        stored_view_ids = {view.id for contact_id in contact_ids for view in all_product_views(api, contact_id)}
        assert {response.product_view.id for response in acknowledged_views} <= stored_view_ids

        events_after_retry = retry_failed(lambda request: start_event(api, request), event_requests, event_outcomes)
        views_after_retry = retry_failed(lambda request: start_view(api, request), view_requests, view_outcomes)

        for before, after in zip(event_outcomes, events_after_retry, strict=True):
            if not isinstance(before, grpc.RpcError):
                assert after.email_event.id == before.email_event.id
        assert_stored_exactly(api, contact_ids, events_after_retry, views_after_retry)
    finally:
        terminator.dispose()
        api.close()
        server.stop()


def terminate_server_connections(connection: Connection) -> int:
    """Terminate the server's PostgreSQL backends on the test database and return their number."""
    terminated = connection.execute(
        text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = :name AND pid <> pg_backend_pid()"
        ),
        {"name": SERVER_APPLICATION_NAME},
    ).scalar_one()
    return int(terminated)


class ServerProcess:
    """`topmail-tracking serve` as a child process, with its JSON log lines read on a background thread."""

    def __init__(self, database_url: str, cwd: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.entrypoints.cli",
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
                *flags,
            ],
            cwd=cwd,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TOPMAIL_LOG_FORMAT": "json"},
        )
        self._log_lines: queue.Queue[dict[str, Any]] = queue.Queue()
        # The server writes a log line per call, so the pipe must be read while the test runs.
        self._reader = threading.Thread(target=self._read_log, name="serve-log-reader", daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self._log_lines.put(json.loads(line))
            except json.JSONDecodeError:
                self._log_lines.put({"message": line.rstrip()})

    def wait_for_log(self, message: str, timeout: float = 30.0) -> dict[str, Any]:
        """Return the first log line with the given message, or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                record = self._log_lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(f"log line {message!r} not seen within {timeout} s") from None
            if record.get("message") == message:
                return record

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def test_sigterm_loses_no_acknowledged_call(database_url: str, database_engine: Engine, tmp_path: Path) -> None:
    api_key = create_workspace_key(database_engine)
    serving = ServerProcess(database_url, tmp_path, "--write-batch-size", "4")
    try:
        started = serving.wait_for_log("gRPC server started")
        api = ApiCaller(f"127.0.0.1:{started['port']}", api_key)
        emails, contact_ids = create_contacts(api, 4)
        event_requests = load_event_requests(emails, 200, "sigterm")
        view_requests = load_view_requests(emails, 60, "sigterm")

        event_futures = [start_event(api, request) for request in event_requests[:150]]
        view_futures = [start_view(api, request) for request in view_requests[:40]]
        # Signal after the first response, so that the rest of the first part is still in flight.
        outcome_of(event_futures[0])
        serving.process.send_signal(signal.SIGTERM)
        event_futures += [start_event(api, request) for request in event_requests[150:]]
        view_futures += [start_view(api, request) for request in view_requests[40:]]
        event_outcomes = outcomes_of(event_futures)
        view_outcomes = outcomes_of(view_futures)
        api.close()
        return_code = serving.process.wait(timeout=30)
    finally:
        serving.close()

    assert return_code == 0
    # NOTE: calls that reached the server but that grpc's asyncio server (grpcio 1.85) had not
    # handed to a handler yet when the shutdown began end with CANCELLED, not UNAVAILABLE. Nothing of them
    # is stored, and a retry with the same idempotency key stores them once.
    assert failure_codes([*event_outcomes, *view_outcomes]) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert not isinstance(event_outcomes[0], grpc.RpcError)
    restarted = RunningServer.start(database_url)
    api = ApiCaller(restarted.address, api_key)
    try:
        acknowledged = {outcome.email_event.id for outcome in event_outcomes if not isinstance(outcome, grpc.RpcError)}
        assert acknowledged <= {event.id for event in all_email_events(api)}

        events_after_retry = retry_failed(lambda request: start_event(api, request), event_requests, event_outcomes)
        views_after_retry = retry_failed(lambda request: start_view(api, request), view_requests, view_outcomes)

        assert_stored_exactly(api, contact_ids, events_after_retry, views_after_retry)
    finally:
        api.close()
        restarted.stop()


# Per-call failure isolation inside a batch


@dataclass
class ExpectedFailure:
    """The status that one call of a wave must get."""

    name: str
    future: grpc.CallFuture[Any]
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str] = field(default_factory=dict)
    violated_fields: list[str] = field(default_factory=list)


def test_failing_calls_fail_alone(batching_server: BatchingServer, api: ApiCaller, database_engine: Engine) -> None:
    other_api = ApiCaller(batching_server.server.address, create_workspace_key(database_engine))
    try:
        create_contact(api, "reader@example.com")
        second_id = create_contact(api, "second@example.com")
        other_workspace_contact = create_contact(other_api, "reader@example.com")
        taken_event = start_event(api, event_request(event_type=OPENED, at=60, idempotency_key="taken")).result()
        taken_view = start_view(api, example_request(email="reader@example.com", idempotency_key="view-taken")).result()

        with wave(batching_server, [api, other_api]):
            valid_events = [
                start_event(api, event_request(event_type=OPENED, at=100 + index, idempotency_key=f"valid-{index}"))
                for index in range(4)
            ]
            twins = [
                start_event(api, event_request(event_type=OPENED, at=500, idempotency_key="twin")),
                start_event(api, event_request(event_type=CLICKED, at=HOUR, idempotency_key="twin")),
            ]
            failures = [
                ExpectedFailure(
                    "unknown e-mail address",
                    start_event(api, event_request(event_type=OPENED, at=200, email="stranger@example.com")),
                    grpc.StatusCode.NOT_FOUND,
                    "CONTACT_NOT_FOUND",
                    {"lookup": "email"},
                ),
                ExpectedFailure(
                    "contact of another workspace",
                    start_event(
                        api, event_request(event_type=OPENED, at=210, email="", contact_id=other_workspace_contact)
                    ),
                    grpc.StatusCode.NOT_FOUND,
                    "CONTACT_NOT_FOUND",
                    {"lookup": "contact_id"},
                ),
                ExpectedFailure(
                    "e-mail address and id of different contacts",
                    start_event(api, event_request(event_type=OPENED, at=220, contact_id=second_id)),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "CONTACT_MISMATCH",
                    violated_fields=["contact_id", "email"],
                ),
                ExpectedFailure(
                    "invalid client address",
                    start_event(api, event_request(event_type=OPENED, at=230, client_ip="300.1.1.1")),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "VALIDATION_FAILED",
                    violated_fields=["client_ip"],
                ),
                ExpectedFailure(
                    "script link",
                    start_event(api, event_request(event_type=CLICKED, at=HOUR, link_url="javascript:alert(1)")),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "VALIDATION_FAILED",
                    violated_fields=["link_url"],
                ),
                ExpectedFailure(
                    "event key stored before with other content",
                    start_event(api, event_request(event_type=CLICKED, at=HOUR, idempotency_key="taken")),
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "IDEMPOTENCY_KEY_REUSED",
                    {"idempotency_key": "taken", "existing_id": taken_event.email_event.id},
                ),
                ExpectedFailure(
                    "view of an unknown contact",
                    start_view(api, example_request(email="stranger@example.com")),
                    grpc.StatusCode.NOT_FOUND,
                    "CONTACT_NOT_FOUND",
                    {"lookup": "email"},
                ),
                ExpectedFailure(
                    "view with an unknown currency",
                    start_view(
                        api,
                        example_request(
                            email="reader@example.com", price=money_pb2.Money(currency_code="XYZ", units=1)
                        ),
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "VALIDATION_FAILED",
                    violated_fields=["price.currency_code"],
                ),
                ExpectedFailure(
                    "view key stored before with other content",
                    start_view(
                        api,
                        example_request(email="reader@example.com", product_id="other", idempotency_key="view-taken"),
                    ),
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "IDEMPOTENCY_KEY_REUSED",
                    {"idempotency_key": "view-taken", "existing_id": taken_view.product_view.id},
                ),
            ]
            valid_views = [
                start_view(api, example_request(email="reader@example.com", product_id=f"valid-{index}"))
                for index in range(3)
            ]
            other_events = [
                start_event(other_api, event_request(event_type=OPENED, at=100 + index)) for index in range(3)
            ]

        stored_events = responses_of(valid_events)
        stored_views = responses_of(valid_views)
        stored_other_events = responses_of(other_events)
        twin_outcomes = outcomes_of(twins)
        for failure in failures:
            outcome = outcome_of(failure.future)
            assert isinstance(outcome, grpc.RpcError), f"{failure.name}: the call succeeded"
            error = unpack_error(outcome)
            assert error.code == failure.code, f"{failure.name}: {error}"
            assert error.info is not None, f"{failure.name}: no ErrorInfo"
            assert error.info.reason == failure.reason, f"{failure.name}: {error}"
            assert dict(error.info.metadata) | failure.metadata == dict(error.info.metadata), f"{failure.name}: {error}"
            assert sorted(error.violated_fields) == failure.violated_fields, f"{failure.name}: {error}"

        [twin_stored] = [outcome for outcome in twin_outcomes if not isinstance(outcome, grpc.RpcError)]
        [twin_rejected] = [unpack_error(outcome) for outcome in twin_outcomes if isinstance(outcome, grpc.RpcError)]
        assert twin_rejected.code == grpc.StatusCode.FAILED_PRECONDITION
        assert twin_rejected.info is not None
        assert twin_rejected.info.reason == "IDEMPOTENCY_KEY_REUSED"
        assert twin_rejected.info.metadata["existing_id"] == twin_stored.email_event.id
        listed = all_email_events(api)
        expected_ids = {taken_event.email_event.id, twin_stored.email_event.id}
        expected_ids |= {created.id for created in twin_stored.created_events}
        expected_ids |= {response.email_event.id for response in stored_events}
        assert sorted(event.id for event in listed) == sorted(expected_ids)
        reader_views = all_product_views(api, taken_view.product_view.contact_id)
        expected_view_ids = {taken_view.product_view.id} | {response.product_view.id for response in stored_views}
        assert sorted(view.id for view in reader_views) == sorted(expected_view_ids)
        other_listed = all_email_events(other_api)
        assert sorted(event.id for event in other_listed) == sorted(
            response.email_event.id for response in stored_other_events
        )
    finally:
        other_api.close()


# Rules across batch boundaries and inside batches


@dataclass
class RulesWave:
    """One workspace and the responses of a wave that mixes every rule that links events."""

    api: ApiCaller
    events: list[EventResponse]
    views: list[ViewResponse]
    late_delivery_messages: list[str]


BURST_MESSAGE = "burst"
SPACED_MESSAGE = "spaced"
OPENS_MESSAGE = "opens"


def rules_wave_requests() -> tuple[list[Any], list[str]]:
    """Return the wave's requests, interleaved so that the rules' events mix in batches, and the late-delivery messages.

    - 6 clicks of burst@ on "burst" within 1 s: a click burst.
    - 4 human clicks of spaced@ on "spaced", 40 s apart: no burst, and no open.
    - on each "late-delivery-N", a DELIVERED event and 2 clicks 3 s and 3.5 s after it. Half
      of the messages list the clicks before the delivery.
    - 3 human opens and 1 bot click of reader@ on "opens".
    """
    burst = [
        event_request(
            email="burst@example.com",
            message_id=BURST_MESSAGE,
            event_type=CLICKED,
            at=HOUR + 0.2 * index,
            link_id=f"link-{index}",
        )
        for index in range(6)
    ]
    spaced = [
        event_request(email="spaced@example.com", message_id=SPACED_MESSAGE, event_type=CLICKED, at=HOUR + 40 * index)
        for index in range(4)
    ]
    late_messages = [f"late-delivery-{index}" for index in range(4)]
    late: list[Any] = []
    for index, message_id in enumerate(late_messages):
        delivery = event_request(email="late@example.com", message_id=message_id, event_type=DELIVERED, at=0)
        clicks = [
            event_request(email="late@example.com", message_id=message_id, event_type=CLICKED, at=at, link_id=f"{at}")
            for at in (3, 3.5)
        ]
        late += [*clicks, delivery] if index % 2 else [delivery, *clicks]
    opens = [
        *(event_request(message_id=OPENS_MESSAGE, event_type=OPENED, at=600 * (index + 1)) for index in range(3)),
        event_request(message_id=OPENS_MESSAGE, event_type=CLICKED, at=HOUR, user_agent=CURL),
    ]
    groups = [burst, spaced, late, opens]
    interleaved = [
        group[index] for index in range(max(len(group) for group in groups)) for group in groups if index < len(group)
    ]
    for request in interleaved:
        request.campaign_id = CAMPAIGN
    return interleaved, late_messages


@pytest.fixture(scope="module")
def rules_wave(batching_server: BatchingServer, database_engine: Engine) -> Iterator[RulesWave]:
    api = ApiCaller(batching_server.server.address, create_workspace_key(database_engine))
    for email in ("burst@example.com", "spaced@example.com", "late@example.com", "reader@example.com"):
        create_contact(api, email)
    requests, late_messages = rules_wave_requests()

    with wave(batching_server, [api]):
        event_futures = [start_event(api, request) for request in requests]
        view_futures = [
            start_view(api, example_request(email="reader@example.com", product_id=f"p-{index}")) for index in range(4)
        ]
    yield RulesWave(api, responses_of(event_futures), responses_of(view_futures), late_messages)
    api.close()


def test_wave_batches_have_configured_size(batching_server: BatchingServer, rules_wave: RulesWave) -> None:
    # Every event and view of one batch gets the batch's commit time, so equal times show shared batches.
    record_times = [response.email_event.record_time.ToNanoseconds() for response in rules_wave.events]
    record_times += [response.product_view.viewed_at.ToNanoseconds() for response in rules_wave.views]
    largest_batch = max(Counter(record_times).values())

    if batching_server.batching is SHARED_BATCHES:
        assert largest_batch > 1
    else:
        assert largest_batch <= SMALL_BATCHES.write_batch_size


def test_burst_clicks_all_end_as_bots(rules_wave: RulesWave) -> None:
    events = all_email_events(rules_wave.api, message_id=BURST_MESSAGE)
    clicks = [event for event in events if event.event_type == CLICKED]

    assert len(clicks) == 6
    for click in clicks:
        assert click.is_bot, f"click at {click.occurred_at.ToDatetime()} is human"
        assert "click_burst" in click.bot_signals
        assert click.bot_type == email_event_pb2.BOT_TYPE_BEHAVIOR
    assert [event.id for event in events if not event.is_bot] == []


def test_spaced_human_clicks_get_one_open(rules_wave: RulesWave) -> None:
    events = all_email_events(rules_wave.api, message_id=SPACED_MESSAGE)
    clicks = [event for event in events if event.event_type == CLICKED]
    opens = [event for event in events if event.event_type == OPENED]

    assert len(clicks) == 4
    assert [click.is_bot for click in clicks] == [False] * 4
    assert len(opens) == 1
    assert opens[0].metadata.inferred
    assert not opens[0].is_bot
    assert opens[0].metadata.inferred_from_event_id in {click.id for click in clicks}


def test_clicks_soon_after_delivery_are_timing_bots(rules_wave: RulesWave) -> None:
    for message_id in rules_wave.late_delivery_messages:
        events = all_email_events(rules_wave.api, message_id=message_id)
        clicks = [event for event in events if event.event_type == CLICKED]

        assert len(clicks) == 2, message_id
        for click in clicks:
            assert click.is_bot, f"{message_id}: click {click.link_id} is human"
            assert click.bot_type == email_event_pb2.BOT_TYPE_TIMING, message_id
        assert [event.id for event in events if event.event_type == OPENED and not event.is_bot] == [], message_id


def test_human_clicks_never_outnumber_human_opens(rules_wave: RulesWave) -> None:
    events = all_email_events(rules_wave.api)
    human_clickers = {
        (event.message_id, event.contact_id) for event in events if event.event_type == CLICKED and not event.is_bot
    }
    human_openers = {
        (event.message_id, event.contact_id) for event in events if event.event_type == OPENED and not event.is_bot
    }

    assert human_clickers
    assert human_clickers <= human_openers


def test_triggers_retracted_exactly_for_bots(rules_wave: RulesWave) -> None:
    events = {event.id: event for event in all_email_events(rules_wave.api)}
    triggers = read_all_triggers(rules_wave.api)
    engagement = {trigger.id: trigger for trigger in triggers if trigger.trigger_type in (EMAIL_OPENED, EMAIL_CLICKED)}
    retracted = Counter(
        trigger.retraction.retracted_trigger_id for trigger in triggers if trigger.trigger_type == RETRACTED
    )
    triggers_by_subject = Counter(trigger.email_engagement.email_event_id for trigger in engagement.values())

    assert set(retracted) <= set(engagement)
    for trigger in engagement.values():
        subject = events[trigger.email_engagement.email_event_id]
        expected_retractions = 1 if subject.is_bot else 0
        assert retracted[trigger.id] == expected_retractions, f"trigger of {subject.event_type} {subject.id}"
    for event in events.values():
        if event.event_type in (OPENED, CLICKED) and not event.is_bot:
            assert triggers_by_subject[event.id] == 1, f"human event {event.id}"
    reasons = {
        trigger.retraction.retracted_trigger_id: trigger.retraction.reason
        for trigger in triggers
        if trigger.trigger_type == RETRACTED
    }
    for trigger_id, reason in reasons.items():
        subject = events[engagement[trigger_id].email_engagement.email_event_id]
        assert reason == subject.bot_signals[0]


def read_all_triggers(api: ApiCaller) -> list[flow_trigger_pb2.FlowTrigger]:
    """Return every trigger of the workspace stored so far, in position order.

    The feed has no end, so this tracks one more product view and reads up to its trigger:
    the view is stored after every earlier call returned, so its trigger comes last.
    """
    marker_email = f"marker-{uuid.uuid4().hex[:8]}@example.com"
    create_contact(api, marker_email)
    marker = start_view(api, example_request(email=marker_email, product_id="marker")).result().product_view
    feed = TriggerStream(api)
    triggers: list[flow_trigger_pb2.FlowTrigger] = []
    try:
        for _ in range(1000):
            [trigger] = feed.take(1, timeout=10.0)
            if trigger.trigger_type == PRODUCT_VIEWED and trigger.product_viewed.product_view_id == marker.id:
                return triggers
            triggers.append(trigger)
    finally:
        feed.close()
    raise AssertionError("the marker view's trigger did not arrive within 1000 triggers")


def test_engagement_stats_match_listed_events(rules_wave: RulesWave) -> None:
    events = all_email_events(rules_wave.api)
    message_ids = sorted({event.message_id for event in events})

    for message_id in message_ids:
        scoped = [event for event in events if event.message_id == message_id]
        assert_stats_match(rules_wave.api, scoped, message_id=message_id)
    assert_stats_match(rules_wave.api, events, campaign_id=CAMPAIGN)


def assert_stats_match(api: ApiCaller, events: Sequence[email_event_pb2.EmailEvent], **scope: str) -> None:
    request = tracking_service_pb2.GetEngagementStatsRequest(include_bots=True, **scope)
    stats = api.tracking.GetEngagementStats(request, metadata=api.metadata, timeout=CALL_TIMEOUT_SECONDS)
    humans = [event for event in events if not event.is_bot]
    bots = Counter((event.bot_type, event.event_type) for event in events if event.is_bot)

    assert figures_of(stats.human) == expected_figures(humans), f"human figures of {scope}"
    assert figures_of(stats.with_bots) == expected_figures(events), f"figures with bots of {scope}"
    breakdown = {entry.bot_type: (entry.opens, entry.clicks) for entry in stats.bot_breakdown}
    expected_breakdown = {
        bot_type: (bots[(bot_type, OPENED)], bots[(bot_type, CLICKED)]) for bot_type, _ in bots if bot_type
    }
    assert breakdown == expected_breakdown, f"bot breakdown of {scope}"


def figures_of(figures: email_event_pb2.EngagementFigures) -> dict[str, int]:
    return {
        "delivered": figures.delivered,
        "opens": figures.opens,
        "unique_opens": figures.unique_opens,
        "clicks": figures.clicks,
        "unique_clicks": figures.unique_clicks,
    }


def expected_figures(events: Sequence[email_event_pb2.EmailEvent]) -> dict[str, int]:
    """Count the figures of GetEngagementStats. "unique" figures and "delivered" count (message, contact) pairs."""

    def of_type(event_type: int) -> list[email_event_pb2.EmailEvent]:
        return [event for event in events if event.event_type == event_type]

    def pairs(selected: list[email_event_pb2.EmailEvent]) -> int:
        return len({(event.message_id, event.contact_id) for event in selected})

    return {
        "delivered": pairs(of_type(DELIVERED)),
        "opens": len(of_type(OPENED)),
        "unique_opens": pairs(of_type(OPENED)),
        "clicks": len(of_type(CLICKED)),
        "unique_clicks": pairs(of_type(CLICKED)),
    }


# Idempotency under concurrency


def test_same_event_ten_times_stores_one(batching_server: BatchingServer, api: ApiCaller) -> None:
    create_contact(api, "reader@example.com")
    request = event_request(event_type=CLICKED, at=HOUR, idempotency_key="same-click", user_agent=BROWSER)

    with wave(batching_server, [api]):
        futures = [start_event(api, request) for _ in range(10)]
    responses = responses_of(futures)

    assert len({response.email_event.id for response in responses}) == 1
    events = all_email_events(api)
    assert [event.event_type for event in events if event.event_type == CLICKED] == [CLICKED]
    assert [event.id for event in events if event.event_type == CLICKED] == [responses[0].email_event.id]
    opens = [event for event in events if event.event_type == OPENED]
    assert len(opens) == 1
    assert opens[0].metadata.inferred_from_event_id == responses[0].email_event.id


def test_same_view_ten_times_stores_one(batching_server: BatchingServer, api: ApiCaller) -> None:
    contact_id = create_contact(api, "reader@example.com")
    request = example_request(email="reader@example.com", idempotency_key="same-view")

    with wave(batching_server, [api]):
        futures = [start_view(api, request) for _ in range(10)]
    responses = responses_of(futures)

    assert len({response.product_view.id for response in responses}) == 1
    assert [view.id for view in all_product_views(api, contact_id)] == [responses[0].product_view.id]


def test_rebuild_keeps_written_counts(rules_wave: RulesWave, database_engine: Engine) -> None:
    # The write path keeps counters and message tallies incrementally. A rebuild recomputes
    # both from the stored events, so it must find nothing to change after the wave.
    written = stored_counts(database_engine)

    with Session(database_engine) as session, session.begin():
        rebuild_engagement_counters(session)

    rebuilt = stored_counts(database_engine)
    assert rebuilt["counters"] == written["counters"]
    assert rebuilt["tallies"] == written["tallies"]
    assert written["tallies"], "the wave stored no message tallies"


def stored_counts(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        counters = connection.execute(select(engagement_counters)).all()
        tallies = connection.execute(select(message_event_tallies)).all()
    return {
        "counters": sorted((tuple(str(value) for value in row) for row in counters), key=str),
        "tallies": sorted(
            (
                (
                    str(row.workspace_id),
                    row.message_id,
                    str(row.contact_id),
                    sorted(map(str, row.tally)),
                    row.has_recorded_human_open,
                )
                for row in tallies
            ),
            key=str,
        ),
    }
