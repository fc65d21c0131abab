"""The one table that maps domain errors to gRPC status codes, HTTP statuses and ErrorInfo reasons."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import grpc

from server.domain.errors import (
    ApiKeyInvalid,
    ApiKeyMissing,
    ContactAlreadyExists,
    ContactMismatch,
    ContactNotFound,
    GatewaySecretInvalid,
    IdempotencyKeyReused,
    LinkSigningNotConfigured,
    StorageUnavailable,
    TrackingError,
    ValidationFailed,
)
from server.domain.tracking_links import InvalidTrackingToken

# `google.rpc.ErrorInfo.domain` of every error this service returns.
ERROR_DOMAIN = "topmail.tracking.v1"


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """The gRPC code, HTTP status and ErrorInfo reason of one kind of error."""

    reason: str
    grpc_code: grpc.StatusCode
    http_status: HTTPStatus


ERROR_TABLE: dict[type[TrackingError], ErrorMapping] = {
    ValidationFailed: ErrorMapping(
        "VALIDATION_FAILED", grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.UNPROCESSABLE_ENTITY
    ),
    ApiKeyMissing: ErrorMapping("API_KEY_MISSING", grpc.StatusCode.UNAUTHENTICATED, HTTPStatus.UNAUTHORIZED),
    ApiKeyInvalid: ErrorMapping("API_KEY_INVALID", grpc.StatusCode.UNAUTHENTICATED, HTTPStatus.UNAUTHORIZED),
    ContactNotFound: ErrorMapping("CONTACT_NOT_FOUND", grpc.StatusCode.NOT_FOUND, HTTPStatus.NOT_FOUND),
    ContactAlreadyExists: ErrorMapping("CONTACT_ALREADY_EXISTS", grpc.StatusCode.ALREADY_EXISTS, HTTPStatus.CONFLICT),
    ContactMismatch: ErrorMapping(
        "CONTACT_MISMATCH", grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.UNPROCESSABLE_ENTITY
    ),
    IdempotencyKeyReused: ErrorMapping(
        "IDEMPOTENCY_KEY_REUSED", grpc.StatusCode.FAILED_PRECONDITION, HTTPStatus.CONFLICT
    ),
    GatewaySecretInvalid: ErrorMapping(
        "GATEWAY_SECRET_INVALID", grpc.StatusCode.UNAUTHENTICATED, HTTPStatus.UNAUTHORIZED
    ),
    LinkSigningNotConfigured: ErrorMapping(
        "LINK_SIGNING_NOT_CONFIGURED", grpc.StatusCode.FAILED_PRECONDITION, HTTPStatus.SERVICE_UNAVAILABLE
    ),
    InvalidTrackingToken: ErrorMapping(
        "TRACKING_TOKEN_INVALID", grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.NOT_FOUND
    ),
    StorageUnavailable: ErrorMapping(
        "STORAGE_UNAVAILABLE", grpc.StatusCode.UNAVAILABLE, HTTPStatus.SERVICE_UNAVAILABLE
    ),
}

# Any exception outside the table is a bug in this service, never a caller's fault.
INTERNAL_ERROR = ErrorMapping("INTERNAL_ERROR", grpc.StatusCode.INTERNAL, HTTPStatus.INTERNAL_SERVER_ERROR)


def mapping_for(error: BaseException) -> ErrorMapping:
    """Return the mapping of an error's class or nearest mapped base class."""
    for error_class in type(error).__mro__:
        mapping = ERROR_TABLE.get(error_class)
        if mapping is not None:
            return mapping
    return INTERNAL_ERROR


def mapping_for_reason(reason: str) -> ErrorMapping | None:
    """Return the mapping of an ErrorInfo reason, for clients such as the HTTP gateway."""
    for mapping in (*ERROR_TABLE.values(), INTERNAL_ERROR):
        if mapping.reason == reason:
            return mapping
    return None
