"""ContactService, API keys and workspace isolation through a real gRPC server."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, select

from server.adapters.database.schema import ApiKeyRow
from tests.e2e.test_track_product_view import create_contact, example_request, track, track_error
from tests.support import ApiCaller, RunningServer, create_workspace_key, unpack_error
from topmail.tracking.v1 import contact_service_pb2


def get_contact(api: ApiCaller, **lookup: str) -> contact_service_pb2.GetContactResponse:
    request = contact_service_pb2.GetContactRequest(**lookup)
    return api.contacts.GetContact(request, metadata=api.metadata, timeout=10)


def contact_error(call: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return unpack_error(caught.value)


def test_create_contact_returns_id_and_time(api: ApiCaller) -> None:
    response = api.contacts.CreateContact(
        contact_service_pb2.CreateContactRequest(email="New.Person@Example.com"), metadata=api.metadata
    )

    assert uuid.UUID(response.contact.id)
    assert response.contact.email == "New.Person@example.com"
    assert response.contact.create_time.seconds > 0


def test_duplicate_address_is_already_exists_with_id(api: ApiCaller) -> None:
    contact_id = create_contact(api, "dup@example.com")

    error = contact_error(lambda: create_contact(api, "DUP@example.COM"))

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.info is not None
    assert error.info.reason == "CONTACT_ALREADY_EXISTS"
    assert error.info.metadata["contact_id"] == contact_id


@pytest.mark.parametrize(
    "email", ["", "no-at-sign", "a@b", "two@@example.com", "x" * 250 + "@example.com", "a@test.test"]
)
def test_invalid_address_rejected(api: ApiCaller, email: str) -> None:
    error = contact_error(lambda: create_contact(api, email))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["email"]


def test_get_contact_by_id_and_by_email(api: ApiCaller) -> None:
    contact_id = create_contact(api, "find.me@example.com")

    by_id = get_contact(api, contact_id=contact_id).contact
    by_email = get_contact(api, email="FIND.ME@example.com").contact

    assert by_id.id == contact_id
    assert by_email.id == contact_id
    assert by_email.email == "find.me@example.com"


def test_get_unknown_contact_is_not_found(api: ApiCaller) -> None:
    by_id = contact_error(lambda: get_contact(api, contact_id=str(uuid.uuid4())))
    by_email = contact_error(lambda: get_contact(api, email="ghost@example.com"))

    assert by_id.code == grpc.StatusCode.NOT_FOUND
    assert by_email.code == grpc.StatusCode.NOT_FOUND
    assert by_email.info is not None
    assert by_email.info.reason == "CONTACT_NOT_FOUND"


def test_get_contact_without_lookup_is_invalid(api: ApiCaller) -> None:
    error = contact_error(lambda: get_contact(api))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(error.violated_fields) == ["contact_id", "email"]


def test_get_contact_with_malformed_id_is_invalid(api: ApiCaller) -> None:
    error = contact_error(lambda: get_contact(api, contact_id="1234"))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["contact_id"]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "API_KEY_MISSING"),
        ((("authorization", "Bearer tm_live_" + "A" * 43),), "API_KEY_INVALID"),
        ((("authorization", "Bearer not-a-key"),), "API_KEY_INVALID"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "API_KEY_INVALID"),
        ((("authorization", "Bearer "),), "API_KEY_INVALID"),
        ((("authorization", "Bearer tm_live_short"),), "API_KEY_INVALID"),
    ],
)
def test_missing_or_wrong_key_is_unauthenticated(
    grpc_server: RunningServer, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    caller = ApiCaller(grpc_server.address, api_key="unused")
    try:
        error = contact_error(
            lambda: caller.tracking.TrackProductView(example_request(), metadata=metadata, timeout=10)
        )
    finally:
        caller.close()

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.info is not None
    assert error.info.reason == reason


def test_key_of_other_mode_works_the_same(grpc_server: RunningServer, database_engine: Engine) -> None:
    from server.domain.api_keys import ApiKeyMode

    caller = ApiCaller(grpc_server.address, create_workspace_key(database_engine, ApiKeyMode.LIVE))
    try:
        contact_id = create_contact(caller, "live@example.com")
    finally:
        caller.close()

    assert uuid.UUID(contact_id)


def test_keys_are_stored_hashed(api: ApiCaller, database_engine: Engine) -> None:
    with database_engine.connect() as connection:
        rows = connection.execute(select(ApiKeyRow.key_hash, ApiKeyRow.key_prefix)).all()

    assert api.api_key not in {row.key_hash for row in rows}
    assert api.api_key[:12] in {row.key_prefix for row in rows}
    assert all(api.api_key[12:] not in row.key_prefix for row in rows)


def test_revoked_key_is_rejected(grpc_server: RunningServer, database_engine: Engine) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from server.domain.api_keys import hash_api_key

    key = create_workspace_key(database_engine)
    with database_engine.begin() as connection:
        connection.execute(
            update(ApiKeyRow).where(ApiKeyRow.key_hash == hash_api_key(key)).values(revoked_at=datetime.now(UTC))
        )
    caller = ApiCaller(grpc_server.address, key)
    try:
        error = contact_error(lambda: create_contact(caller, "revoked@example.com"))
    finally:
        caller.close()

    assert error.code == grpc.StatusCode.UNAUTHENTICATED


def test_workspace_cannot_read_other_workspace_contact(api: ApiCaller, other_api: ApiCaller) -> None:
    contact_id = create_contact(other_api, "private@example.com")

    by_id = contact_error(lambda: get_contact(api, contact_id=contact_id))
    by_email = contact_error(lambda: get_contact(api, email="private@example.com"))

    assert by_id.code == grpc.StatusCode.NOT_FOUND
    assert by_email.code == grpc.StatusCode.NOT_FOUND


def test_workspace_cannot_track_against_other_workspace_contact(api: ApiCaller, other_api: ApiCaller) -> None:
    contact_id = create_contact(other_api, "private@example.com")

    by_id = track_error(api, example_request(email="", contact_id=contact_id))
    by_email = track_error(api, example_request(email="private@example.com"))

    assert by_id.code == grpc.StatusCode.NOT_FOUND
    assert by_email.code == grpc.StatusCode.NOT_FOUND


def test_same_address_in_two_workspaces_is_two_contacts(api: ApiCaller, other_api: ApiCaller) -> None:
    mine = create_contact(api, "shared@example.com")
    theirs = create_contact(other_api, "shared@example.com")

    view = track(api, example_request(email="shared@example.com")).product_view

    assert mine != theirs
    assert view.contact_id == mine


def test_two_authorization_entries_rejected(api: ApiCaller, other_api: ApiCaller) -> None:
    metadata = (*api.metadata, *other_api.metadata)

    error = contact_error(
        lambda: api.contacts.CreateContact(
            contact_service_pb2.CreateContactRequest(email="twice@example.com"), metadata=metadata, timeout=10
        )
    )

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
