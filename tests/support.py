"""Test helpers: an in-process server runner, an authenticated client and error unpacking."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine

from server.adapters.database.repository import SqlStore
from server.domain.api_keys import ApiKeyMode
from server.entrypoints.gateway.serve import build_gateway, gateway_server
from server.entrypoints.grpc_api.app import GrpcApp, start_grpc_app
from server.entrypoints.settings import Settings
from server.usecases.workspaces import WorkspaceAdmin
from topmail.tracking.v1 import contact_service_pb2_grpc, tracking_service_pb2_grpc


class RunningServer:
    """A GrpcApp served by an event loop on a background thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, app: GrpcApp) -> None:
        self.loop = loop
        self.thread = thread
        self.app = app
        self.address = f"127.0.0.1:{app.port}"

    @classmethod
    def start(cls, database_url: str, **overrides: Any) -> RunningServer:
        settings = Settings(**{"database_url": database_url, "grpc_listen": "127.0.0.1:0", **overrides})
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="grpc-test-server", daemon=True)
        thread.start()
        app = asyncio.run_coroutine_threadsafe(start_grpc_app(settings), loop).result(timeout=30)
        return cls(loop, thread, app)

    def stop(self, grace_seconds: float = 1.0) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(grace_seconds), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def create_workspace_key(engine: Engine, mode: ApiKeyMode = ApiKeyMode.TEST) -> str:
    """Create a workspace with a unique name and return its API key."""
    admin = WorkspaceAdmin(SqlStore(engine), lambda: datetime.now(UTC))
    return admin.create_workspace(f"test-{uuid.uuid4().hex[:12]}", mode).api_key


@dataclass
class ApiCaller:
    """Stubs for both services on one channel, sending the workspace's API key on every call."""

    address: str
    api_key: str
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.address)
        self.contacts = contact_service_pb2_grpc.ContactServiceStub(self.channel)
        self.tracking = tracking_service_pb2_grpc.TrackingServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def close(self) -> None:
        self.channel.close()


@dataclass(frozen=True)
class ErrorDetails:
    """The rich details of a failed call, unpacked."""

    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None

    @property
    def violated_fields(self) -> list[str]:
        if self.bad_request is None:
            return []
        return [violation.field for violation in self.bad_request.field_violations]


def unpack_error(error: grpc.RpcError) -> ErrorDetails:
    """Return the status code, ErrorInfo and BadRequest carried by a failed call."""
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    info = None
    bad_request = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
    return ErrorDetails(code=error.code(), message=error.details() or "", info=info, bad_request=bad_request)


class RunningGateway:
    """The HTTP gateway under uvicorn, on an event loop in a background thread, on an ephemeral port."""

    def __init__(self, settings: Settings, *, replay_interval_seconds: float = 0.2) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.app = build_gateway(settings, replay_interval_seconds=replay_interval_seconds)
        # The socket bound here replaces the listen address of the settings.
        self._server = gateway_server(self.app, settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="gateway-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the gateway did not start within 10 s")
            time.sleep(0.01)

    def _run(self) -> None:
        self._loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        self._loop.close()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request without following redirects; return status, lower-case headers and body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
        finally:
            connection.close()
