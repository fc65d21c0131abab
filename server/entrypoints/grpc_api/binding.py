"""Binds servicer methods to the RPCs of a service descriptor, wrapped in the per-call rules.

For every call the wrapper parses the request leniently, so that bad bytes are never INTERNAL.
It authenticates the API key and runs the servicer method within the call's deadline: on a
worker thread, or on the event loop when the method is a coroutine function. Domain errors become rich statuses, and every call writes one log line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from server.domain.errors import FieldViolation, TrackingError, ValidationFailed
from server.entrypoints.error_table import mapping_for
from server.entrypoints.grpc_api.statuses import error_status, internal_status

logger = logging.getLogger(__name__)

ServicerMethod = Callable[[uuid.UUID, Any], Message]
AsyncServicerMethod = Callable[[uuid.UUID, Any], Awaitable[Message]]
StreamingServicerMethod = Callable[[uuid.UUID, Any], AsyncIterator[Message]]


class CallerAuthenticator(Protocol):
    """Maps a call's bearer token (None when absent) to the caller id the servicer gets."""

    def authenticate(self, token: str | None, /) -> uuid.UUID: ...


# An authenticator may also offer `cached_workspace_id(token) -> uuid.UUID | None`, which returns
# the caller from memory, so a coroutine method needs no worker thread for a known key.
CachedLookup = Callable[[str | None], uuid.UUID | None]


class MalformedRequest:
    """Placeholder for a request whose bytes did not parse, so the call can return INVALID_ARGUMENT."""

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def _lenient_deserializer(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    # grpcio returns INTERNAL when a deserializer raises, but a caller's bad bytes are INVALID_ARGUMENT.
    def deserialize(serialized: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(serialized)
        except (DecodeError, UnicodeDecodeError, ValueError):
            return MalformedRequest(message_class.DESCRIPTOR.full_name)

    return deserialize


def _bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """Return the token of `authorization: Bearer <token>`, None when absent.

    Another scheme, or more than one authorization entry, gives "", which no key matches.
    """
    values = [value for key, value in context.invocation_metadata() or () if key.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        return ""
    text = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
    scheme, _, token = text.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ServiceBinder:
    """Builds generic handlers for servicers whose methods take (workspace_id, request)."""

    def __init__(self, authenticator: CallerAuthenticator, executor: Executor) -> None:
        self._authenticator = authenticator
        self._executor = executor

    def bind(
        self,
        service: ServiceDescriptor,
        servicer: object,
        authenticators: dict[str, CallerAuthenticator] | None = None,
    ) -> grpc.GenericRpcHandler[Any, Any]:
        """Return a handler for every RPC of the service; raise TypeError if one is not implemented.

        RPCs named in `authenticators` check the bearer token with that authenticator instead of
        the workspace API keys.
        """
        authenticators = authenticators or {}
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in service.methods:
            if method.client_streaming:
                raise TypeError(f"{service.full_name}.{method.name}: client streaming is not supported")
            implementation = getattr(servicer, method.name, None)
            if not callable(implementation):
                raise TypeError(f"{type(servicer).__name__} does not implement {service.full_name}.{method.name}")
            rpc_name = f"/{service.full_name}/{method.name}"
            authenticator = authenticators.get(method.name, self._authenticator)
            request_deserializer = _lenient_deserializer(GetMessageClass(method.input_type))
            response_serializer = GetMessageClass(method.output_type).SerializeToString
            if method.server_streaming:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    self._wrap_stream(rpc_name, implementation, authenticator),
                    request_deserializer=request_deserializer,
                    response_serializer=response_serializer,
                )
                continue
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                self._wrap(rpc_name, implementation, authenticator),
                request_deserializer=request_deserializer,
                response_serializer=response_serializer,
            )
        return grpc.method_handlers_generic_handler(service.full_name, handlers)

    def _wrap(
        self,
        rpc_name: str,
        implementation: ServicerMethod | AsyncServicerMethod,
        authenticator: CallerAuthenticator,
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            record = _CallRecord(rpc_name, context)
            try:
                response = await self._run(implementation, authenticator, request, context, record)
                record.outcome = grpc.StatusCode.OK.name
                return response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                record.outcome = grpc.StatusCode.CANCELLED.name
                raise
            except Exception as error:
                await record.fail(context, error)
            finally:
                record.log()
            raise AssertionError("abort returned")  # pragma: no cover - context.abort always raises

        return call

    def _wrap_stream(
        self, rpc_name: str, implementation: StreamingServicerMethod, authenticator: CallerAuthenticator
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message]]:
        """Wrap a server-streaming method, an async generator that takes (caller id, request)."""

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
            record = _CallRecord(rpc_name, context, messages=0)
            try:
                token = _bearer_token(context)
                record.caller = await asyncio.get_running_loop().run_in_executor(
                    self._executor, authenticator.authenticate, token
                )
                _reject_malformed(request)
                async for message in implementation(record.caller, request):
                    yield message
                    record.messages = (record.messages or 0) + 1
                record.outcome = grpc.StatusCode.OK.name
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                record.outcome = grpc.StatusCode.CANCELLED.name
                raise
            except Exception as error:
                await record.fail(context, error)
            finally:
                record.log()

        return call

    async def _run(
        self,
        implementation: ServicerMethod | AsyncServicerMethod,
        authenticator: CallerAuthenticator,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        record: _CallRecord,
    ) -> Message:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise TimeoutError
        token = _bearer_token(context)
        loop = asyncio.get_running_loop()
        if inspect.iscoroutinefunction(implementation):
            # Coroutine methods run on the event loop; only a cache miss needs a worker thread.
            cached_lookup: CachedLookup | None = getattr(authenticator, "cached_workspace_id", None)
            caller = cached_lookup(token) if cached_lookup is not None else None
            if caller is None:
                caller = await loop.run_in_executor(self._executor, authenticator.authenticate, token)
            record.caller = caller
            _reject_malformed(request)
            coroutine_method = cast(AsyncServicerMethod, implementation)
            # asyncio.timeout cancels the method in place; wait_for would wrap it in another task.
            async with asyncio.timeout(remaining):
                return await coroutine_method(caller, request)
        sync_method = cast(ServicerMethod, implementation)

        def authenticate_and_call() -> Message:
            record.caller = authenticator.authenticate(token)
            _reject_malformed(request)
            return sync_method(record.caller, request)

        future = loop.run_in_executor(self._executor, authenticate_and_call)
        return await asyncio.wait_for(future, timeout=remaining)


class _CallRecord:
    """Fields of the log line of one call, filled in while the call runs."""

    def __init__(self, rpc_name: str, context: grpc.aio.ServicerContext[Any, Any], messages: int | None = None) -> None:
        self.rpc_name = rpc_name
        # Read now: grpcio 1.85 crashes the process when a cancelled streaming call reads its peer.
        self.peer = context.peer()
        self.call_id = uuid.uuid4().hex
        self.started = time.perf_counter()
        self.outcome = "UNKNOWN"
        self.caller: uuid.UUID | None = None
        self.messages = messages

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
        """Abort the call with the status of the error; log it when it is a bug."""
        if isinstance(error, TrackingError):
            mapping = mapping_for(error)
            self.outcome = mapping.grpc_code.name
            await _abort(context, error_status(error, mapping))
        elif isinstance(error, TimeoutError):
            self.outcome = grpc.StatusCode.DEADLINE_EXCEEDED.name
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call finished")
        else:
            self.outcome = grpc.StatusCode.INTERNAL.name
            logger.error(
                "unexpected error in call",
                exc_info=error,
                extra={"rpc": self.rpc_name, "call_id": self.call_id},
            )
            await _abort(context, internal_status(self.call_id))

    def log(self) -> None:
        fields: dict[str, object] = {
            "rpc": self.rpc_name,
            "code": self.outcome,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
            "workspace_id": str(self.caller) if self.caller else None,
            "call_id": self.call_id,
            "peer": self.peer,
        }
        if self.messages is not None:
            fields["messages"] = self.messages
        logger.info("rpc finished", extra=fields)


def _reject_malformed(request: object) -> None:
    if isinstance(request, MalformedRequest):
        raise ValidationFailed([FieldViolation("", f"the request is not a valid {request.message_name} message")])


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    await context.abort(status.code, status.details, status.trailing_metadata)
