"""TrackProductView through a real gRPC server on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.type import money_pb2
from sqlalchemy import Engine, func, select

from server.adapters.database.schema import FlowTriggerRow, ProductViewRow
from tests.support import ApiCaller, unpack_error
from topmail.tracking.v1 import contact_service_pb2, tracking_service_pb2

EXAMPLE_EMAIL = "shopper@example.com"


def example_request(**overrides: Any) -> tracking_service_pb2.TrackProductViewRequest:
    """The README's example view, with fields replaced by `overrides`."""
    fields: dict[str, Any] = {
        "email": EXAMPLE_EMAIL,
        "product_id": "prod_abc123",
        "product_name": "Premium Wireless Headphones",
        "product_url": "https://shop.example.com/products/wireless-headphones",
        "image_url": "https://shop.example.com/images/headphones.jpg",
        "price": money_pb2.Money(currency_code="USD", units=99, nanos=990_000_000),
        "category": "Electronics",
        "brand": "AudioCo",
        "sku": "WH-PRO-BLK",
    }
    fields.update(overrides)
    return tracking_service_pb2.TrackProductViewRequest(**fields)


def create_contact(api: ApiCaller, email: str = EXAMPLE_EMAIL) -> str:
    response = api.contacts.CreateContact(contact_service_pb2.CreateContactRequest(email=email), metadata=api.metadata)
    return response.contact.id


def track(
    api: ApiCaller, request: tracking_service_pb2.TrackProductViewRequest
) -> tracking_service_pb2.TrackProductViewResponse:
    return api.tracking.TrackProductView(request, metadata=api.metadata, timeout=10)


def track_error(api: ApiCaller, request: tracking_service_pb2.TrackProductViewRequest) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        track(api, request)
    return unpack_error(caught.value)


def count_rows(engine: Engine, row_class: Any, **filters: Any) -> int:
    with engine.connect() as connection:
        statement = select(func.count()).select_from(row_class)
        for name, value in filters.items():
            statement = statement.where(getattr(row_class, name) == value)
        return int(connection.scalar(statement) or 0)


def test_example_view_is_stored_and_returned(api: ApiCaller, database_engine: Engine) -> None:
    contact_id = create_contact(api)
    before = datetime.now(UTC)

    view = track(api, example_request()).product_view

    assert uuid.UUID(view.id)
    assert view.contact_id == contact_id
    assert view.product_id == "prod_abc123"
    assert view.product_name == "Premium Wireless Headphones"
    assert view.product_url == "https://shop.example.com/products/wireless-headphones"
    assert view.image_url == "https://shop.example.com/images/headphones.jpg"
    assert (view.price.units, view.price.nanos, view.price.currency_code) == (99, 990_000_000, "USD")
    assert (view.category, view.brand, view.sku) == ("Electronics", "AudioCo", "WH-PRO-BLK")
    assert before - timedelta(seconds=1) <= view.viewed_at.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
    with database_engine.connect() as connection:
        row = connection.execute(select(ProductViewRow).where(ProductViewRow.id == uuid.UUID(view.id))).one()
    assert row.price_amount == Decimal("99.99")
    assert str(row.contact_id) == contact_id


def test_price_is_exact_decimal_in_database(api: ApiCaller, database_engine: Engine) -> None:
    create_contact(api)

    view = track(api, example_request(price=money_pb2.Money(units=99, nanos=990_000_000))).product_view

    with database_engine.connect() as connection:
        stored = connection.scalar(select(ProductViewRow.price_amount).where(ProductViewRow.id == uuid.UUID(view.id)))
    assert isinstance(stored, Decimal)
    assert stored == Decimal("99.99")
    assert str(stored.normalize()) == "99.99"


def test_view_writes_product_viewed_trigger(api: ApiCaller, database_engine: Engine) -> None:
    contact_id = create_contact(api)

    view = track(api, example_request(session_id="sess-1")).product_view

    with database_engine.connect() as connection:
        trigger = connection.execute(
            select(FlowTriggerRow).where(FlowTriggerRow.subject_id == uuid.UUID(view.id))
        ).one()
    assert trigger.trigger_type == "product_viewed"
    assert trigger.ordering_key == contact_id
    assert trigger.payload["product_id"] == "prod_abc123"
    assert trigger.payload["price"] == "99.99"
    assert trigger.payload["currency_code"] == "USD"
    assert trigger.payload["session_id"] == "sess-1"
    assert trigger.payload["contact_id"] == contact_id


def test_trigger_positions_increase(api: ApiCaller, database_engine: Engine) -> None:
    create_contact(api)

    ids = [uuid.UUID(track(api, example_request(product_id=f"p{i}")).product_view.id) for i in range(3)]

    with database_engine.connect() as connection:
        positions = [
            connection.scalar(select(FlowTriggerRow.position).where(FlowTriggerRow.subject_id == view_id))
            for view_id in ids
        ]
    assert None not in positions
    assert positions == sorted(position or 0 for position in positions)
    assert len(set(positions)) == 3


def test_view_by_contact_id(api: ApiCaller) -> None:
    contact_id = create_contact(api)

    view = track(api, example_request(email="", contact_id=contact_id)).product_view

    assert view.contact_id == contact_id


def test_view_by_email_is_case_insensitive(api: ApiCaller) -> None:
    contact_id = create_contact(api)

    view = track(api, example_request(email="SHOPPER@Example.COM")).product_view

    assert view.contact_id == contact_id


def test_email_and_contact_id_naming_same_contact(api: ApiCaller) -> None:
    contact_id = create_contact(api)

    view = track(api, example_request(contact_id=contact_id.upper())).product_view

    assert view.contact_id == contact_id


def test_email_and_contact_id_naming_different_contacts(api: ApiCaller) -> None:
    create_contact(api)
    other_id = create_contact(api, "other@example.com")

    error = track_error(api, example_request(contact_id=other_id))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None
    assert error.info.reason == "CONTACT_MISMATCH"
    assert sorted(error.violated_fields) == ["contact_id", "email"]


def test_unknown_email_is_not_found(api: ApiCaller) -> None:
    error = track_error(api, example_request(email="nobody@example.com"))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.info is not None
    assert error.info.reason == "CONTACT_NOT_FOUND"
    assert error.info.domain == "topmail.tracking.v1"
    assert error.info.metadata["lookup"] == "email"


def test_unknown_contact_id_is_not_found(api: ApiCaller) -> None:
    error = track_error(api, example_request(email="", contact_id=str(uuid.uuid4())))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.info is not None
    assert error.info.metadata["lookup"] == "contact_id"


def test_optional_fields_may_be_omitted(api: ApiCaller) -> None:
    create_contact(api)
    request = tracking_service_pb2.TrackProductViewRequest(
        email=EXAMPLE_EMAIL, product_id="p1", product_name="Plain", product_url="http://shop.example.com/p1"
    )

    view = track(api, request).product_view

    assert not view.HasField("price")
    assert (view.image_url, view.variant_id, view.category, view.sku) == ("", "", "", "")


@pytest.mark.parametrize("field", ["product_id", "variant_id", "category", "brand", "sku", "session_id"])
def test_hundred_character_fields_on_edge(api: ApiCaller, field: str) -> None:
    create_contact(api)

    accepted = track(api, example_request(**{field: "x" * 100})).product_view
    error = track_error(api, example_request(**{field: "x" * 101}))

    assert getattr(accepted, field) == "x" * 100
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == [field]
    assert "at most 100 characters" in error.bad_request.field_violations[0].description


def test_product_name_limit_on_edge(api: ApiCaller) -> None:
    create_contact(api)

    accepted = track(api, example_request(product_name="n" * 200)).product_view
    error = track_error(api, example_request(product_name="n" * 201))

    assert accepted.product_name == "n" * 200
    assert error.violated_fields == ["product_name"]


def test_limits_count_characters_not_bytes(api: ApiCaller) -> None:
    create_contact(api)

    view = track(api, example_request(product_name="ü" * 200)).product_view

    assert view.product_name == "ü" * 200


@pytest.mark.parametrize(("units", "nanos"), [(0, 0), (0, 1), (1_000_000, 999_999_999)])
def test_non_negative_prices_accepted(api: ApiCaller, units: int, nanos: int) -> None:
    create_contact(api)

    view = track(
        api, example_request(price=money_pb2.Money(currency_code="EUR", units=units, nanos=nanos))
    ).product_view

    assert (view.price.units, view.price.nanos, view.price.currency_code) == (units, nanos, "EUR")


@pytest.mark.parametrize(("units", "nanos"), [(0, -10_000_000), (-1, 0), (-1, -500_000_000)])
def test_negative_price_rejected(api: ApiCaller, units: int, nanos: int) -> None:
    create_contact(api)

    error = track_error(api, example_request(price=money_pb2.Money(currency_code="USD", units=units, nanos=nanos)))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["price.units"]
    assert "negative" in error.bad_request.field_violations[0].description


def test_nanos_of_a_whole_unit_rejected(api: ApiCaller) -> None:
    create_contact(api)

    error = track_error(api, example_request(price=money_pb2.Money(units=1, nanos=1_000_000_000)))

    assert error.violated_fields == ["price.nanos"]


def test_lower_case_currency_is_stored_upper_case(api: ApiCaller) -> None:
    create_contact(api)

    view = track(api, example_request(price=money_pb2.Money(currency_code="usd", units=5))).product_view

    assert view.price.currency_code == "USD"


def test_empty_currency_defaults_to_usd(api: ApiCaller) -> None:
    create_contact(api)

    view = track(api, example_request(price=money_pb2.Money(units=5))).product_view

    assert view.price.currency_code == "USD"


@pytest.mark.parametrize("currency_code", ["US", "USDX", "XYZ", "U$D", "XXX"])
def test_invalid_currency_rejected(api: ApiCaller, currency_code: str) -> None:
    create_contact(api)

    error = track_error(api, example_request(price=money_pb2.Money(currency_code=currency_code, units=5)))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["price.currency_code"]
    assert "ISO 4217" in error.bad_request.field_violations[0].description


@pytest.mark.parametrize("field", ["product_url", "image_url"])
@pytest.mark.parametrize(
    "url",
    [
        "/products/wireless-headphones",
        "shop.example.com/products/1",
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "ftp://shop.example.com/file",
        "https://",
        "https://shop.example.com/a b",
        "https://shop.example.com:99999/",
        "data:text/html,hi",
    ],
)
def test_invalid_urls_rejected(api: ApiCaller, field: str, url: str) -> None:
    create_contact(api)

    error = track_error(api, example_request(**{field: url}))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == [field]


def test_url_length_limit_on_edge(api: ApiCaller) -> None:
    create_contact(api)
    base = "https://shop.example.com/"

    accepted = track(api, example_request(product_url=base + "a" * (2048 - len(base)))).product_view
    error = track_error(api, example_request(product_url=base + "a" * (2049 - len(base))))

    assert len(accepted.product_url) == 2048
    assert error.violated_fields == ["product_url"]


def test_every_violation_listed_at_once(api: ApiCaller) -> None:
    request = tracking_service_pb2.TrackProductViewRequest(
        contact_id="not-a-uuid",
        product_id="x" * 101,
        product_url="javascript:alert(1)",
        image_url="/relative.jpg",
        price=money_pb2.Money(currency_code="XYZ", units=-1),
        sku="s\x00",
    )

    error = track_error(api, request)

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None
    assert error.info.reason == "VALIDATION_FAILED"
    assert sorted(error.violated_fields) == sorted(
        [
            "contact_id",
            "product_id",
            "product_name",
            "product_url",
            "image_url",
            "sku",
            "price.units",
            "price.currency_code",
        ]
    )
    assert error.info.metadata["violation_count"] == "8"


def test_missing_contact_reference_names_both_fields(api: ApiCaller) -> None:
    error = track_error(api, example_request(email=""))

    assert sorted(error.violated_fields) == ["contact_id", "email"]


def test_invalid_email_rejected(api: ApiCaller) -> None:
    error = track_error(api, example_request(email="shopper@@example"))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violated_fields == ["email"]


def test_blank_required_text_rejected(api: ApiCaller) -> None:
    create_contact(api)

    error = track_error(api, example_request(product_id="   ", product_name="\t"))

    assert sorted(error.violated_fields) == ["product_id", "product_name"]


def test_idempotent_retry_stores_one_view_and_one_trigger(api: ApiCaller, database_engine: Engine) -> None:
    create_contact(api)
    request = example_request(idempotency_key="order-42-view")

    first = track(api, request).product_view
    second = track(api, request).product_view

    assert second.id == first.id
    assert second.viewed_at == first.viewed_at
    assert second.idempotency_key == "order-42-view"
    view_id = uuid.UUID(first.id)
    assert count_rows(database_engine, ProductViewRow, id=view_id) == 1
    assert count_rows(database_engine, FlowTriggerRow, subject_id=view_id) == 1


def test_idempotent_retry_counts_rows_per_workspace(api: ApiCaller, database_engine: Engine) -> None:
    contact_id = create_contact(api)
    request = example_request(idempotency_key="retry-me")

    for _ in range(3):
        track(api, request)

    assert count_rows(database_engine, ProductViewRow, contact_id=uuid.UUID(contact_id)) == 1
    assert count_rows(database_engine, FlowTriggerRow, ordering_key=contact_id) == 1


def test_concurrent_retries_store_one_view(api: ApiCaller, database_engine: Engine) -> None:
    contact_id = create_contact(api)
    request = example_request(idempotency_key="concurrent-key")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        views = list(pool.map(lambda _: track(api, request).product_view, range(8)))

    assert len({view.id for view in views}) == 1
    assert count_rows(database_engine, ProductViewRow, contact_id=uuid.UUID(contact_id)) == 1
    assert count_rows(database_engine, FlowTriggerRow, ordering_key=contact_id) == 1


def test_reused_key_with_other_content_fails(api: ApiCaller, database_engine: Engine) -> None:
    contact_id = create_contact(api)
    first = track(api, example_request(idempotency_key="k-1")).product_view

    error = track_error(api, example_request(idempotency_key="k-1", product_id="prod_other"))

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.info is not None
    assert error.info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert error.info.metadata["existing_id"] == first.id
    assert count_rows(database_engine, ProductViewRow, contact_id=uuid.UUID(contact_id)) == 1


def test_reused_key_with_other_price_fails(api: ApiCaller) -> None:
    create_contact(api)
    track(api, example_request(idempotency_key="k-price"))

    error = track_error(
        api, example_request(idempotency_key="k-price", price=money_pb2.Money(currency_code="USD", units=100))
    )

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION


def test_same_key_in_two_workspaces_is_independent(api: ApiCaller, other_api: ApiCaller) -> None:
    create_contact(api)
    create_contact(other_api)

    first = track(api, example_request(idempotency_key="shared-key")).product_view
    second = track(other_api, example_request(idempotency_key="shared-key")).product_view

    assert first.id != second.id
    assert first.contact_id != second.contact_id


@pytest.mark.parametrize("key", ["k" * 256, "has space", "tab\tkey", "ключ"])
def test_invalid_idempotency_key_rejected(api: ApiCaller, key: str) -> None:
    create_contact(api)

    error = track_error(api, example_request(idempotency_key=key))

    assert error.violated_fields == ["idempotency_key"]


def test_longest_idempotency_key_accepted(api: ApiCaller) -> None:
    create_contact(api)

    view = track(api, example_request(idempotency_key="k" * 255)).product_view

    assert view.idempotency_key == "k" * 255
