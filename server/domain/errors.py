"""Domain errors. Each one maps to one gRPC status, HTTP status and ErrorInfo reason at the edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: its path in the request and the rule it breaks."""

    field: str
    description: str


class TrackingError(Exception):
    """Base of every error that a caller can cause or handle.

    `metadata` becomes `google.rpc.ErrorInfo.metadata` and the JSON error body, so it never
    contains secrets or full e-mail addresses.
    """

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class ValidationFailed(TrackingError):
    """One or more request fields are invalid; `violations` lists all of them."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(violation.field or "the request" for violation in violations)
        super().__init__(
            f"invalid request: {len(violations)} field violation(s) in {fields}",
            {"violation_count": str(len(violations))},
        )
        self.violations = tuple(violations)


class ContactNotFound(TrackingError):
    """No contact with the given id or e-mail address exists in the caller's workspace."""

    def __init__(self, lookup: str) -> None:
        super().__init__(f"contact not found by {lookup} in this workspace", {"lookup": lookup})


class ContactAlreadyExists(TrackingError):
    """The workspace already has a contact with this e-mail address."""

    def __init__(self, existing_contact_id: str) -> None:
        super().__init__(
            f"a contact with this e-mail address already exists: {existing_contact_id}",
            {"contact_id": existing_contact_id},
        )
        self.existing_contact_id = existing_contact_id


class ContactMismatch(TrackingError):
    """`email` and `contact_id` were both given and name different contacts."""

    def __init__(self, contact_id: str) -> None:
        super().__init__(
            f"email and contact_id name different contacts; contact_id is {contact_id}",
            {"contact_id": contact_id},
        )
        self.violations = (
            FieldViolation("email", "must name the same contact as contact_id"),
            FieldViolation("contact_id", "must name the same contact as email"),
        )


class IdempotencyKeyReused(TrackingError):
    """The idempotency key was used before in this workspace for different content."""

    def __init__(self, idempotency_key: str, existing_id: str) -> None:
        super().__init__(
            "idempotency_key was already used for a request with different content; use a new key for new content",
            {"idempotency_key": idempotency_key, "existing_id": existing_id},
        )


class ApiKeyMissing(TrackingError):
    """The call carries no `authorization: Bearer <api key>` metadata."""

    def __init__(self) -> None:
        super().__init__("missing API key: send the metadata 'authorization: Bearer <api key>'")


class ApiKeyInvalid(TrackingError):
    """The API key is malformed, unknown or revoked."""

    def __init__(self, key_prefix: str) -> None:
        super().__init__("invalid API key: it is malformed, unknown or revoked", {"key_prefix": key_prefix})


class StorageUnavailable(TrackingError):
    """The database could not be reached or timed out; the call may be retried."""

    def __init__(self) -> None:
        super().__init__("storage is unavailable; retry with backoff")


class GatewaySecretInvalid(TrackingError):
    """A RecordTrackingHits call carries a missing or wrong gateway secret."""

    def __init__(self) -> None:
        super().__init__("invalid gateway secret: send 'authorization: Bearer <gateway secret>'")


class LinkSigningNotConfigured(TrackingError):
    """The server lacks a setting that signing or verifying tracking links needs."""

    def __init__(self, setting: str) -> None:
        super().__init__(f"tracking links are not configured on this server: set {setting}", {"setting": setting})
