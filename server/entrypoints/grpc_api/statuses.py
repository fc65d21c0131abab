"""Rich gRPC error statuses: ErrorInfo on every error, BadRequest on invalid arguments."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain.errors import ContactMismatch, FieldViolation, TrackingError, ValidationFailed
from server.entrypoints.error_table import ERROR_DOMAIN, INTERNAL_ERROR, ErrorMapping


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _bad_request(violations: tuple[FieldViolation, ...]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=violation.field, description=violation.description)
            for violation in violations
        ]
    )


def error_status_message(error: TrackingError, mapping: ErrorMapping) -> status_pb2.Status:
    """Build the `google.rpc.Status` of a domain error with its ErrorInfo and, for field errors, its BadRequest."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=mapping.reason, domain=ERROR_DOMAIN, metadata=error.metadata))]
    if isinstance(error, ValidationFailed | ContactMismatch):
        details.append(_pack(_bad_request(error.violations)))
    return status_pb2.Status(code=_code_number(mapping.grpc_code), message=error.message, details=details)


def error_status(error: TrackingError, mapping: ErrorMapping) -> grpc.Status:
    """Build the call status of a domain error, for `context.abort`."""
    return rpc_status.to_status(error_status_message(error, mapping))


def internal_status(call_id: str) -> grpc.Status:
    """Build the status of an unexpected fault; the message names the call id found in the logs."""
    info = error_details_pb2.ErrorInfo(reason=INTERNAL_ERROR.reason, domain=ERROR_DOMAIN, metadata={"call_id": call_id})
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INTERNAL,
            message=f"internal error; the server logged it with call_id {call_id}",
            details=[_pack(info)],
        )
    )


def _code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number
